package darwin

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// The routing socket constants of routemsg.go must be macOS's: each index
// below is out of range, and the build fails, when they differ.
func _() {
	var x [1]struct{}
	_ = x[rtmVersion-unix.RTM_VERSION]
	_ = x[rtmAdd-unix.RTM_ADD]
	_ = x[rtmDelete-unix.RTM_DELETE]
	_ = x[rtmChange-unix.RTM_CHANGE]
	_ = x[rtmNewAddr-unix.RTM_NEWADDR]
	_ = x[rtmDelAddr-unix.RTM_DELADDR]
	_ = x[rtmIfInfo-unix.RTM_IFINFO]
	_ = x[rtfLLInfo-unix.RTF_LLINFO]
	_ = x[rtfWasCloned-unix.RTF_WASCLONED]
}

// errOverflow is the error of a read after the socket's buffer overflowed
// and messages were lost.
var errOverflow = unix.ENOBUFS

// openRouteSocket opens a PF_ROUTE socket, non-blocking so that Go's
// poller serves its reads and Close ends a pending Read.
func openRouteSocket() (io.ReadCloser, error) {
	fd, err := unix.Socket(unix.AF_ROUTE, unix.SOCK_RAW, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("open routing socket: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("routing socket: %w", err)
	}
	return os.NewFile(uintptr(fd), "PF_ROUTE"), nil
}
