package swtpm

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/kballard/go-shellquote"

	"github.com/qcluster/qcluster/internal/child"
)

// debianPackage names the Debian package that ships each program this
// package runs, for the error given when it is missing.
var debianPackage = map[string]string{
	"swtpm":         "swtpm",
	"swtpm_setup":   "swtpm-tools",
	"swtpm_localca": "swtpm-tools",
}

// lookBinary returns explicit if set (checked to be an executable file), else
// the path of name in PATH. The error names the Debian package.
func lookBinary(explicit, name string) (string, error) {
	p := explicit
	if p == "" {
		p = name
	}
	found, err := exec.LookPath(p)
	if err != nil {
		return "", fmt.Errorf("find %s: %w (install the Debian package %s)", name, err, debianPackage[name])
	}
	return found, nil
}

// ProcessError reports a swtpm or swtpm_setup process that failed to start or
// ended badly. Error() is one line: the shell-quoted argv, the cause and the
// last lines the process wrote to stdout and stderr.
type ProcessError struct {
	// Argv is the full command line, program first.
	Argv []string
	// Output is the tail of what the process wrote to stdout and stderr (at most 8 KiB).
	Output string
	// Err is the cause: an *exec.ExitError, a start error, or a protocol error.
	Err error
}

func (e *ProcessError) Error() string {
	var b strings.Builder
	b.WriteString(shellquote.Join(e.Argv...))
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if out := oneLine(e.Output); out != "" {
		b.WriteString(": output: ")
		b.WriteString(out)
	}
	return b.String()
}

func (e *ProcessError) Unwrap() error { return e.Err }

// oneLine joins the last few non-empty lines of s with " | ", each cut to a
// readable length (swtpm_setup logs whole EK moduli in hex).
func oneLine(s string) string {
	const maxLines, maxLine = 12, 240
	var lines []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > maxLine {
				l = l[:maxLine] + "…"
			}
			lines = append(lines, l)
		}
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, " | ")
}

// pidNamespaceAttr is child.Attr plus a new PID namespace, with the child as
// its init: when the child dies, the kernel kills everything else in the
// namespace. swtpm_setup needs this, since Pdeathsig cannot reach the swtpm it
// starts: glib's spawn double-forks, so that swtpm is reparented to init at
// once, and it inherits both ends of its own socket pairs from swtpm_setup
// (no close-on-exec), so it never sees swtpm_setup go away and runs forever.
// Without root, a user namespace mapping only the caller's own ids makes the
// PID namespace possible where unprivileged user namespaces are allowed.
func pidNamespaceAttr() *syscall.SysProcAttr {
	a := child.Attr()
	a.Cloneflags = syscall.CLONE_NEWPID
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	}
	return a
}

// openLog opens path for appending swtpm's output, creating it 0600.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	return f, nil
}
