package transport

import (
	"sync/atomic"
	"time"
)

// CallObserver is told about every call a Server answers, for metrics.
// ObserveCall runs on the handler's goroutine after the reply is encoded
// and before it is sent, once per request, possibly from many goroutines
// at once; it must be cheap and must not block.
//
// method is the registered method name, or UnknownMethodLabel for a name
// the server has no handler for (so a stranger cannot create label values
// at will). code is "ok" for success, else the error's wire code (a
// CodedError's Code, "not_leader", "timeout" or "internal"): a small set
// fixed by the sentinels in the code base. d is the time from the request's
// dispatch to its encoded reply.
type CallObserver interface {
	ObserveCall(method, code string, d time.Duration)
}

// UnknownMethodLabel is the method CallObserver receives for a request
// naming a method the server does not serve.
const UnknownMethodLabel = "unknown"

// CodeOK is the code CallObserver receives for a call that succeeded.
const CodeOK = "ok"

// SetObserver makes s report every call it answers to o; nil stops the
// reports. It may be called at any time, also while serving.
func (s *Server) SetObserver(o CallObserver) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&o)
}

func (s *Server) observe(method string, known bool, werr *wireError, start time.Time) {
	p := s.observer.Load()
	if p == nil {
		return
	}
	if !known {
		method = UnknownMethodLabel
	}
	code := CodeOK
	if werr != nil {
		code = werr.Code
	}
	(*p).ObserveCall(method, code, time.Since(start))
}

// observerSlot holds the Server's CallObserver.
type observerSlot = atomic.Pointer[CallObserver]
