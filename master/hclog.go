package master

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogBridge sends hashicorp/raft's hclog output to our slog.Logger. It is
// the one bridge between the two logging worlds: raft and its transport get
// it, everything else logs through slog directly.
type hclogBridge struct {
	l    *slog.Logger
	name string
	args []any
}

func newHCLogBridge(l *slog.Logger, name string) hclog.Logger {
	return &hclogBridge{l: l.With("component", name), name: name}
}

func toSlogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (b *hclogBridge) Log(level hclog.Level, msg string, args ...any) {
	b.l.Log(context.Background(), toSlogLevel(level), strings.ToLower(msg), args...)
}
func (b *hclogBridge) Trace(msg string, args ...any) { b.Log(hclog.Trace, msg, args...) }
func (b *hclogBridge) Debug(msg string, args ...any) { b.Log(hclog.Debug, msg, args...) }
func (b *hclogBridge) Info(msg string, args ...any)  { b.Log(hclog.Info, msg, args...) }
func (b *hclogBridge) Warn(msg string, args ...any)  { b.Log(hclog.Warn, msg, args...) }
func (b *hclogBridge) Error(msg string, args ...any) { b.Log(hclog.Error, msg, args...) }
func (b *hclogBridge) enabled(l slog.Level) bool     { return b.l.Enabled(context.Background(), l) }
func (b *hclogBridge) IsTrace() bool                 { return b.enabled(slog.LevelDebug) }
func (b *hclogBridge) IsDebug() bool                 { return b.enabled(slog.LevelDebug) }
func (b *hclogBridge) IsInfo() bool                  { return b.enabled(slog.LevelInfo) }
func (b *hclogBridge) IsWarn() bool                  { return b.enabled(slog.LevelWarn) }
func (b *hclogBridge) IsError() bool                 { return b.enabled(slog.LevelError) }
func (b *hclogBridge) ImpliedArgs() []any            { return b.args }
func (b *hclogBridge) With(args ...any) hclog.Logger {
	return &hclogBridge{l: b.l.With(args...), name: b.name, args: append(append([]any(nil), b.args...), args...)}
}
func (b *hclogBridge) Name() string { return b.name }
func (b *hclogBridge) Named(name string) hclog.Logger {
	if b.name != "" {
		name = b.name + "." + name
	}
	return b.ResetNamed(name)
}
func (b *hclogBridge) ResetNamed(name string) hclog.Logger {
	return &hclogBridge{l: b.l.With("component", name), name: name, args: b.args}
}

// SetLevel is a no-op: the slog handler owns the level.
func (b *hclogBridge) SetLevel(hclog.Level) {}
func (b *hclogBridge) GetLevel() hclog.Level {
	switch {
	case b.IsDebug():
		return hclog.Debug
	case b.IsInfo():
		return hclog.Info
	case b.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}
func (b *hclogBridge) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(b.StandardWriter(opts), "", 0)
}
func (b *hclogBridge) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		b.Info(strings.TrimSpace(string(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
