package redistest

import "syscall"

// ownSession runs the server as a service runs: in a session of its own.
// Linux schedules a session as one group (autogroup), so a server in the
// test's session would share the CPU with the test's client threads as no
// deployed Redis does. Pdeathsig still ends it with the test process (with
// the thread that started it, which Go ends only under LockOSThread, used
// nowhere here).
func ownSession() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
}
