package master

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hclogBridge sends hashicorp/raft's hclog output to our slog.Logger. It is
// the one bridge between the two logging worlds: raft and its transport get
// it, everything else logs through slog directly.
//
// On the way it makes raft's lines fit for a person reading a master's log:
//   - values are rendered as text (readableValue): hclog.Fmt is formatted
//     instead of printed as "[%+v …]", raft's servers read "m2 (host:port)",
//     and structs and Stringers become strings rather than JSON "{}";
//   - errors raft logs for conditions that are expected while members are
//     down, cut off or changing leader (faultLevels) are logged at WARN or
//     INFO, so ERROR keeps meaning "something is wrong with this master";
//   - a WARN or ERROR repeated by the same component is logged once, then
//     at most once per interval with the count suppressed in between
//     (repeatLimiter), so a master without a majority does not log
//     hundreds of lines a minute. INFO and DEBUG lines pass unlimited: they
//     are the history of elections and are rare.
//
// Loggers derived with With or Named share one limiter. Safe for
// concurrent use.
type hclogBridge struct {
	root  *slog.Logger // the logger given to newHCLogBridge
	l     *slog.Logger // root with the component and implied args
	name  string
	args  []any
	limit *repeatLimiter
}

// repeatInterval is how often a repeated raft warning or error is logged.
const repeatInterval = 10 * time.Second

func newHCLogBridge(l *slog.Logger, name string) hclog.Logger {
	return newHCLogBridgeEvery(l, name, repeatInterval)
}

// newHCLogBridgeEvery is newHCLogBridge with a repeat interval; tests use it.
func newHCLogBridgeEvery(l *slog.Logger, name string, every time.Duration) *hclogBridge {
	return &hclogBridge{root: l, l: l.With("component", name), name: name, limit: newRepeatLimiter(every)}
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

// faultLevels holds raft's ERROR messages (lower-cased) that report what
// happens whenever a member is down, partitioned, restarting or losing an
// election, with the level they are logged at instead. The cluster
// recovers from each of them by itself; the operator's signal is the
// member's status, not these lines.
var faultLevels = map[string]slog.Level{
	// A follower did not answer the leader: it is down or cut off.
	"failed to appendentries to":              slog.LevelWarn,
	"failed to heartbeat to":                  slog.LevelWarn,
	"failed to pipeline appendentries":        slog.LevelWarn,
	"failed to start pipeline replication to": slog.LevelWarn,
	"failed to send snapshot to":              slog.LevelWarn,
	// A candidate could not reach a voter.
	"failed to make requestvote rpc": slog.LevelWarn,
	// A member dropped its connection mid-request.
	"failed to decode incoming command": slog.LevelWarn,
	"failed to flush response":          slog.LevelWarn,
	// A follower answered with a newer term: another member was elected,
	// as in every leadership transfer. This leader steps down.
	"peer has newer term, stopping replication": slog.LevelInfo,
}

// Log logs msg at level (adjusted by faultLevels), unless it is a repeated
// warning or error the limiter holds back.
func (b *hclogBridge) Log(level hclog.Level, msg string, args ...any) {
	msg = strings.ToLower(msg)
	lvl := toSlogLevel(level)
	if l, ok := faultLevels[msg]; ok && lvl > l {
		lvl = l
	}
	ctx := context.Background()
	if !b.l.Enabled(ctx, lvl) {
		return
	}
	if lvl >= slog.LevelWarn {
		ok, suppressed, since := b.limit.admit(b.name, msg, time.Now())
		if !ok {
			return
		}
		if suppressed > 0 {
			msg = fmt.Sprintf("%s (×%d in %s)", msg, suppressed, roundSpan(since))
		}
	}
	b.l.Log(ctx, lvl, msg, readableArgs(args)...)
}

// roundSpan rounds d for a person: whole seconds from a second up.
func roundSpan(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
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
	return &hclogBridge{root: b.root, l: b.l.With(readableArgs(args)...), name: b.name, args: append(append([]any(nil), b.args...), args...), limit: b.limit}
}
func (b *hclogBridge) Name() string { return b.name }
func (b *hclogBridge) Named(name string) hclog.Logger {
	if b.name != "" {
		name = b.name + "." + name
	}
	return b.ResetNamed(name)
}

// ResetNamed returns a logger for the component name, replacing b's
// component; b's implied args are kept, as hclog's own loggers keep them.
func (b *hclogBridge) ResetNamed(name string) hclog.Logger {
	l := b.root.With("component", name).With(readableArgs(b.args)...)
	return &hclogBridge{root: b.root, l: l, name: name, args: b.args, limit: b.limit}
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

// readableArgs turns hclog's key/value list into slog's, with every value
// through readableValue. A key that is not a string is printed; a key
// without a value gets the value "(missing)".
func readableArgs(args []any) []any {
	out := make([]any, 0, len(args)+1)
	for i := 0; i < len(args); i += 2 {
		var key string
		switch k := args[i].(type) {
		case string:
			key = k
		case slog.Attr:
			// slog's own attributes pass as they are.
			out = append(out, k)
			i--
			continue
		default:
			key = fmt.Sprint(k)
		}
		if i+1 == len(args) {
			out = append(out, key, "(missing)")
			break
		}
		out = append(out, key, readableValue(args[i+1]))
	}
	return out
}

// readableValue renders one value of a raft log line as a slog value a
// person can read in both text and JSON logs:
//   - hclog.Fmt("%+v", x) is formatted, with x itself made readable;
//   - hclog.Hex, Octal, Binary and Quote are formatted as hclog would;
//   - a raft.Server is "m2 (host:port)", with its suffrage if not a
//     voter, and a []raft.Server a comma-separated list or "none";
//   - errors, strings, numbers, booleans, durations and times stay as
//     they are, for the handler to render;
//   - any other fmt.Stringer becomes its String, and any other value
//     (a struct, pointer, map or slice) its %+v text, never JSON "{}".
func readableValue(v any) any {
	switch x := v.(type) {
	case nil, error, string, bool, time.Duration, time.Time, slog.Value, slog.LogValuer,
		int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return v
	case hclog.Format:
		if len(x) == 0 {
			return ""
		}
		format, ok := x[0].(string)
		if !ok {
			return fmt.Sprint(readableAll(x)...)
		}
		return fmt.Sprintf(format, readableAll(x[1:])...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(x))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(x))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(x))
	case hclog.Quote:
		return fmt.Sprintf("%q", string(x))
	case raft.Server:
		return serverText(x)
	case *raft.Server:
		if x == nil {
			return "none"
		}
		return serverText(*x)
	case []raft.Server:
		if len(x) == 0 {
			return "none"
		}
		parts := make([]string, len(x))
		for i, s := range x {
			parts[i] = serverText(s)
		}
		return strings.Join(parts, ", ")
	case fmt.Stringer:
		return x.String()
	}
	// Named basic types (raft.ServerID, raft.ServerAddress, raft.RPCHeader
	// fields…) read best as their underlying value.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String:
		return rv.String()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint()
	case reflect.Bool:
		return rv.Bool()
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	}
	return fmt.Sprintf("%+v", v)
}

func readableAll(vs []any) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = readableValue(v)
	}
	return out
}

// serverText renders a raft server as "m2 (127.0.0.1:7000)", adding its
// suffrage when it is not a voter: "m4 (127.0.0.1:7003, nonvoter)".
func serverText(s raft.Server) string {
	if s.Suffrage == raft.Voter {
		return fmt.Sprintf("%s (%s)", s.ID, s.Address)
	}
	return fmt.Sprintf("%s (%s, %s)", s.ID, s.Address, strings.ToLower(s.Suffrage.String()))
}

// repeatLimiter holds back repeats of a log message. For each component
// and message it admits the first occurrence, then at most one per
// interval; an admitted repeat reports how many were held back since the
// last admitted one. A run of repeats that stops is summed up only if the
// message comes again: the limiter starts no timer. Its memory is bounded
// by the number of distinct messages seen in one interval (raft has a few
// dozen), as older entries are dropped once the table grows. Safe for
// concurrent use.
type repeatLimiter struct {
	interval time.Duration

	mu   sync.Mutex
	seen map[repeatKey]*repeatRun
}

type repeatKey struct{ component, msg string }

type repeatRun struct {
	last       time.Time // when the message was last admitted
	suppressed int       // held back since last
}

// repeatTableMax is the table size at which admit drops runs whose
// interval has passed; a message met again afterwards starts a new run.
const repeatTableMax = 256

func newRepeatLimiter(interval time.Duration) *repeatLimiter {
	return &repeatLimiter{interval: interval, seen: make(map[repeatKey]*repeatRun)}
}

// admit reports whether the message may be logged at now. When it may,
// suppressed is how many occurrences were held back since it was last
// logged, since ago.
func (l *repeatLimiter) admit(component, msg string, now time.Time) (ok bool, suppressed int, since time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := repeatKey{component, msg}
	r := l.seen[k]
	if r == nil {
		if len(l.seen) >= repeatTableMax {
			for k, r := range l.seen {
				if now.Sub(r.last) >= l.interval {
					delete(l.seen, k)
				}
			}
		}
		l.seen[k] = &repeatRun{last: now}
		return true, 0, 0
	}
	if since = now.Sub(r.last); since < l.interval {
		r.suppressed++
		return false, 0, 0
	}
	suppressed = r.suppressed
	r.last, r.suppressed = now, 0
	return true, suppressed, since
}
