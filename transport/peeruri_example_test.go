package transport_test

import (
	"fmt"

	"github.com/tetherd/tetherd/transport"
)

func ExampleParsePeerURI() {
	u, err := transport.ParsePeerURI("tether://[fd00::1]:8443?token=s3cret&pin=sha256:RxxcQILFgnaP1MEO7f-SQpZe32gjbMeqckXSjDtO69o")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(u.URL)
	fmt.Println(u.Token)
	fmt.Println(u.Pin)
	fmt.Println(u.Redacted())

	_, err = transport.ParsePeerURI("tether://example.com?token=s3cret")
	fmt.Println(err)
	// Output:
	// wss://[fd00::1]:8443/tether
	// s3cret
	// sha256:RxxcQILFgnaP1MEO7f-SQpZe32gjbMeqckXSjDtO69o
	// tether://[fd00::1]:8443?token=REDACTED&pin=sha256:RxxcQILFgnaP1MEO7f-SQpZe32gjbMeqckXSjDtO69o
	// peer URI: tether:// needs a port, as in tether://example.com:8443
}
