//go:build !linux

package redistest

import "syscall"

// ownSession is Linux's concern only (session_linux.go).
func ownSession() *syscall.SysProcAttr { return nil }
