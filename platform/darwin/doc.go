// Package darwin will configure utun routes and DNS on macOS; see issue: macOS.
package darwin
