package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// noticeHandler prints log records in the step style, through the status
// printer (so never inside a spinner frame): warnings as " ! message",
// errors as " ✗ message", info and debug as "   · message", each with its
// attributes as key=value. The accelerator notice ("kvm unusable: using
// TCG") is such a warning.
type noticeHandler struct {
	st    *status
	level slog.Leveler
	attrs []slog.Attr
	group string
}

func newNoticeHandler(st *status, level slog.Leveler) *noticeHandler {
	return &noticeHandler{st: st, level: level}
}

func (h *noticeHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *noticeHandler) Handle(_ context.Context, r slog.Record) error {
	mark := "   ·"
	switch {
	case r.Level >= slog.LevelError:
		mark = " ✗"
	case r.Level >= slog.LevelWarn:
		mark = " !"
	}
	var b strings.Builder
	b.WriteString(mark + " " + r.Message)
	write := func(a slog.Attr) {
		if a.Equal(slog.Attr{}) {
			return
		}
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " \t\"") {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", key, v)
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(func(a slog.Attr) bool {
		write(a)
		return true
	})
	h.st.Logf("%s", b.String())
	return nil
}

func (h *noticeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &n
}

func (h *noticeHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}
