package transport

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"fileshare/transport/wire"
)

// envelopeCases are requests and responses at the edges of every
// msgpack size class the envelope uses.
func envelopeCases() ([]request, []response) {
	reqs := []request{
		{},
		{ID: 10, Method: "Swarm.Register", Timeout: int64(30 * time.Second), Body: []byte{0x80}},
		{ID: math.MaxUint64, Method: strings.Repeat("m", 31), Timeout: -1, Body: []byte{}},
		{ID: 128, Method: strings.Repeat("m", 32), Timeout: math.MinInt64, Body: bytes.Repeat([]byte{1}, 256)},
		{ID: 1 << 32, Method: strings.Repeat("m", 256), Timeout: math.MaxInt64, Body: bytes.Repeat([]byte{2}, 1<<16)},
	}
	resps := []response{
		{},
		{ID: 11, Body: []byte{0xc0}},
		{ID: 255, Err: &wireError{Code: "not_leader", LeaderID: "m1", LeaderAddr: "127.0.0.1:7001", Message: "not the leader"}},
		{ID: 65536, Err: &wireError{Code: "internal"}, Body: []byte{}},
		{ID: 7, Err: &wireError{Code: "x", LeaderAddr: "a"}, Body: bytes.Repeat([]byte{3}, 300)},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		reqs = append(reqs, request{ID: rng.Uint64() >> rng.IntN(64), Method: randString(rng), Timeout: rng.Int64() >> rng.IntN(64) * int64(1-2*rng.IntN(2)), Body: randBytes(rng)})
		r := response{ID: rng.Uint64() >> rng.IntN(64), Body: randBytes(rng)}
		if rng.IntN(2) == 0 {
			r.Err = &wireError{Code: randString(rng), Message: randString(rng), LeaderID: randString(rng), LeaderAddr: randString(rng)}
		}
		resps = append(resps, r)
	}
	return reqs, resps
}

func randString(rng *rand.Rand) string {
	return strings.Repeat("x", []int{0, 1, 31, 32, 255, 256, 70000}[rng.IntN(7)]>>rng.IntN(2))
}

func randBytes(rng *rand.Rand) []byte {
	if rng.IntN(5) == 0 {
		return nil
	}
	return make([]byte, []int{0, 1, 255, 256, 65535, 65536}[rng.IntN(6)])
}

// The envelope's hand-written codec writes the reflective codec's bytes,
// so masters of both versions read each other's frames during a rolling
// upgrade; and each side decodes the other's bytes to the same value.
func TestEnvelopeMatchesReflectiveCodec(t *testing.T) {
	reqs, resps := envelopeCases()
	for i, r := range reqs {
		want, err := Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got := appendRequest(nil, r.ID, r.Method, r.Timeout, r.Body)
		if !bytes.Equal(got, want) {
			t.Fatalf("request %d: hand-written encoding\n%x\nwant the reflective\n%x", i, got[:min(len(got), 64)], want[:min(len(want), 64)])
		}
		v, err := decodeRequest(want)
		if err != nil {
			t.Fatalf("request %d: decode: %v", i, err)
		}
		var back request
		if err := Unmarshal(want, &back); err != nil {
			t.Fatal(err)
		}
		if v.ID != back.ID || string(v.Method) != back.Method || v.Timeout != back.Timeout || !bytes.Equal(v.Body, back.Body) {
			t.Fatalf("request %d: fast decode %+v, reflective %+v", i, v, back)
		}
	}
	for i, r := range resps {
		if len(r.Body) == 0 {
			r.Body = nil // omitempty: both mean no body
		}
		want, err := Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got := appendResponse(nil, r.ID, r.Err, r.Body)
		if !bytes.Equal(got, want) {
			t.Fatalf("response %d: hand-written encoding\n%x\nwant the reflective\n%x", i, got[:min(len(got), 64)], want[:min(len(want), 64)])
		}
		v, err := decodeResponse(want)
		if err != nil {
			t.Fatalf("response %d: decode: %v", i, err)
		}
		var back response
		if err := Unmarshal(want, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(responseView(back), v) {
			t.Fatalf("response %d: fast decode %+v, reflective %+v", i, v, back)
		}
	}
}

// A frame outside the fast path (here: a struct sent as an array, which
// the reflective codec accepts) is still understood, by the fallback.
func TestEnvelopeFallsBackToReflectiveDecoder(t *testing.T) {
	// request as a positional array: ID, Method, Timeout, Body.
	frame := []byte{0x94, 0x05, 0xa1, 'x', 0x01, 0xc4, 0x01, 0x09}
	v, err := decodeRequest(frame)
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != 5 || string(v.Method) != "x" || v.Timeout != 1 || !bytes.Equal(v.Body, []byte{9}) {
		t.Fatalf("got %+v, want ID 5, Method x, Timeout 1, Body [9]", v)
	}
	if _, err := decodeRequest([]byte{0x81, 0xa2, 'I', 'D', 0xff}); err == nil {
		t.Fatal("a negative ID decoded; want the reflective decoder's error")
	}
}

// Any bytes decode as an envelope or fail; nothing panics, and what the
// fast path accepts the reflective decoder reads the same way (when it
// accepts it too).
func FuzzEnvelopeDecode(f *testing.F) {
	reqs, resps := envelopeCases()
	for _, r := range reqs[:5] {
		f.Add(appendRequest(nil, r.ID, r.Method, r.Timeout, r.Body))
	}
	for _, r := range resps[:5] {
		f.Add(appendResponse(nil, r.ID, r.Err, r.Body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := decodeRequest(b); err == nil {
			var back request
			if Unmarshal(b, &back) == nil && (v.ID != back.ID || string(v.Method) != back.Method || v.Timeout != back.Timeout) {
				t.Fatalf("request %x: fast %+v, reflective %+v", b, v, back)
			}
			again, err := decodeRequest(appendRequest(nil, v.ID, string(v.Method), v.Timeout, v.Body))
			if err != nil || again.ID != v.ID || !bytes.Equal(again.Method, v.Method) || again.Timeout != v.Timeout || !bytes.Equal(again.Body, v.Body) {
				t.Fatalf("request %+v does not survive a round trip: %+v, %v", v, again, err)
			}
		}
		if v, err := decodeResponse(b); err == nil {
			again, err := decodeResponse(appendResponse(nil, v.ID, v.Err, v.Body))
			if err != nil || again.ID != v.ID || !bytes.Equal(again.Body, v.Body) || (again.Err == nil) != (v.Err == nil) || v.Err != nil && *again.Err != *v.Err {
				t.Fatalf("response %+v does not survive a round trip: %+v, %v", v, again, err)
			}
		}
	})
}

// benchMsg has a hand-written codec, as the hot client messages do.
type benchMsg struct {
	Name  string
	Index uint64
}

func (m *benchMsg) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, 2)
	b = wire.AppendString(b, "Index")
	b = wire.AppendUint(b, m.Index)
	b = wire.AppendString(b, "Name")
	return wire.AppendString(b, m.Name)
}

func (m *benchMsg) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Index":
			m.Index = r.Uint(64)
		case "Name":
			m.Name = r.String()
		default:
			r.Fail()
		}
	}
	if r.Err() != nil {
		*m = benchMsg{}
	}
	return r.Err()
}

// reflectMsg is benchMsg without the hand-written codec.
type reflectMsg benchMsg

// BenchmarkRoundTrip measures one RPC over loopback: encode, frame, send,
// serve, reply, decode. Allocations per op are the whole path, client and
// server; ns/op with -cpu 1 is one call's latency, with parallel callers
// its throughput.
func BenchmarkRoundTrip(b *testing.B) {
	for _, secure := range []bool{false, true} {
		name := "plain"
		if secure {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			var m *Mux
			var err error
			dial := DialFunc(nil)
			if secure {
				dir := b.TempDir()
				if _, err := InitFiles(dir, []string{"m1", "m2"}, []string{"127.0.0.1"}, time.Hour); err != nil {
					b.Fatal(err)
				}
				load := func(n string) *TLS {
					tl, err := LoadTLS(dir+"/"+n+".pem", dir+"/"+n+"-key.pem", dir+"/ca.pem")
					if err != nil {
						b.Fatal(err)
					}
					return tl
				}
				m, err = ListenMux(MuxConfig{Addr: "127.0.0.1:0", TLS: load("m1")})
				cfg := load("m2").MasterClientConfig()
				dial = func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
					return DialStreamTLS(addr, kind, timeout, cfg)
				}
			} else {
				m, err = Listen("127.0.0.1:0", nil)
			}
			if err != nil {
				b.Fatal(err)
			}
			s := NewServer(nil)
			Handle(s, "Fast", func(ctx context.Context, r *benchMsg) (*benchMsg, error) {
				return &benchMsg{Name: r.Name, Index: r.Index + 1}, nil
			})
			Handle(s, "Slow", func(ctx context.Context, r *reflectMsg) (*reflectMsg, error) {
				return &reflectMsg{Name: r.Name, Index: r.Index + 1}, nil
			})
			go s.Serve(m.Listener(StreamRPC))
			defer func() { s.Close(); m.Close() }()
			c := NewClient(ClientConfig{Dial: dial})
			defer c.Close()
			addr := m.Addr().String()
			for _, tc := range []struct {
				name   string
				method string
				in     any
				out    func() any
			}{
				{"wire", "Fast", &benchMsg{Name: "peer-0123456789abcdef", Index: 1 << 20}, func() any { return new(benchMsg) }},
				{"reflect", "Slow", &reflectMsg{Name: "peer-0123456789abcdef", Index: 1 << 20}, func() any { return new(reflectMsg) }},
			} {
				if err := c.Call(context.Background(), addr, tc.method, tc.in, tc.out()); err != nil {
					b.Fatal(err)
				}
				b.Run(tc.name, func(b *testing.B) {
					b.ReportAllocs()
					b.RunParallel(func(pb *testing.PB) {
						out := tc.out()
						for pb.Next() {
							if err := c.Call(context.Background(), addr, tc.method, tc.in, out); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
}
