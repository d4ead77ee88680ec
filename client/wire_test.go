package client

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"fileshare/transport"
	"fileshare/transport/wire"
)

// Defined types with the hot messages' fields but not their methods: the
// reflective codec's view of them, which the hand-written one must match.
type (
	plainRegister  RegisterRequest
	plainWrite     WriteReply
	plainHBReq     HeartbeatRequest
	plainHBReply   HeartbeatReply
	plainLookup    LookupRequest
	plainLookupRep LookupReply
	plainAnnounce  TrackerAnnounceRequest
	plainRenew     TrackerRenewRequest
	plainBatch     TrackerAnnounceBatchRequest
	plainBatchRep  TrackerAnnounceBatchReply
)

// codecCase pairs a fresh hand-coded message with its reflective twin.
type codecCase struct {
	name  string
	fast  func() wireMsg // a new zero message
	plain func(any) any  // the same pointer as its plain type
	gen   func(*gen) any // a random message (pointer)
}

type wireMsg interface {
	wire.Encoder
	wire.Decoder
}

var codecCases = []codecCase{
	{"RegisterRequest", func() wireMsg { return new(RegisterRequest) }, func(v any) any { return (*plainRegister)(v.(*RegisterRequest)) },
		func(g *gen) any {
			return &RegisterRequest{WriteHeader: g.header(), Files: g.files()}
		}},
	{"WriteReply", func() wireMsg { return new(WriteReply) }, func(v any) any { return (*plainWrite)(v.(*WriteReply)) },
		func(g *gen) any {
			return &WriteReply{Index: g.u64(), Duplicate: g.bool(), LeaderHint: LeaderHint{g.str()}}
		}},
	{"HeartbeatRequest", func() wireMsg { return new(HeartbeatRequest) }, func(v any) any { return (*plainHBReq)(v.(*HeartbeatRequest)) },
		func(g *gen) any {
			return &HeartbeatRequest{PeerID: g.str(), Key: g.bytes(), Forwarded: g.bool()}
		}},
	{"HeartbeatReply", func() wireMsg { return new(HeartbeatReply) }, func(v any) any { return (*plainHBReply)(v.(*HeartbeatReply)) },
		func(g *gen) any {
			return &HeartbeatReply{LeaseMillis: g.i64(), LeaderHint: LeaderHint{g.str()}}
		}},
	{"LookupRequest", func() wireMsg { return new(LookupRequest) }, func(v any) any { return (*plainLookup)(v.(*LookupRequest)) },
		func(g *gen) any {
			return &LookupRequest{ReadHeader: ReadHeader{Level: ReadLevel(g.str()), Forwarded: g.bool()}, FileID: g.str()}
		}},
	{"LookupReply", func() wireMsg { return new(LookupReply) }, func(v any) any { return (*plainLookupRep)(v.(*LookupReply)) },
		func(g *gen) any {
			r := &LookupReply{Found: g.bool(), Index: g.u64(), LeaderHint: LeaderHint{g.str()}}
			r.File = FileSummary{FileEntry: g.file(), Holders: int(g.i64())}
			if g.r.IntN(4) > 0 {
				r.Holders = []HolderEntry{}
				for range g.r.IntN(20) {
					r.Holders = append(r.Holders, HolderEntry{PeerID: g.str(), Addr: g.str(), Name: g.str()})
				}
			}
			return r
		}},
	{"TrackerAnnounceRequest", func() wireMsg { return new(TrackerAnnounceRequest) }, func(v any) any { return (*plainAnnounce)(v.(*TrackerAnnounceRequest)) },
		func(g *gen) any {
			a := &TrackerAnnounceRequest{Port: uint16(g.u64()), Key: uint32(g.u64()), HasKey: g.bool(), Event: uint8(g.u64()), Seeder: g.bool(), Forwarded: g.bool()}
			g.fill(a.InfoHash[:])
			g.fill(a.Peer[:])
			g.fill(a.IP[:])
			return a
		}},
	{"TrackerRenewRequest", func() wireMsg { return new(TrackerRenewRequest) }, func(v any) any { return (*plainRenew)(v.(*TrackerRenewRequest)) },
		func(g *gen) any {
			r := &TrackerRenewRequest{Forwarded: g.bool()}
			if g.r.IntN(4) > 0 {
				r.Entries = []SwarmRef{}
				for range g.r.IntN(20) {
					var e SwarmRef
					g.fill(e.InfoHash[:])
					g.fill(e.Peer[:])
					g.fill(e.IP[:])
					r.Entries = append(r.Entries, e)
				}
			}
			return r
		}},
	{"TrackerAnnounceBatchRequest", func() wireMsg { return new(TrackerAnnounceBatchRequest) }, func(v any) any { return (*plainBatch)(v.(*TrackerAnnounceBatchRequest)) },
		func(g *gen) any {
			r := &TrackerAnnounceBatchRequest{Forwarded: g.bool()}
			if g.r.IntN(4) > 0 {
				r.Announces = []TrackerAnnounceRequest{}
				for range g.r.IntN(20) {
					a := TrackerAnnounceRequest{Port: uint16(g.u64()), Key: uint32(g.u64()), HasKey: g.bool(), Event: uint8(g.u64()), Seeder: g.bool(), Forwarded: g.bool()}
					g.fill(a.InfoHash[:])
					g.fill(a.Peer[:])
					g.fill(a.IP[:])
					r.Announces = append(r.Announces, a)
				}
			}
			return r
		}},
	{"TrackerAnnounceBatchReply", func() wireMsg { return new(TrackerAnnounceBatchReply) }, func(v any) any { return (*plainBatchRep)(v.(*TrackerAnnounceBatchReply)) },
		func(g *gen) any {
			r := &TrackerAnnounceBatchReply{LeaderHint: LeaderHint{g.str()}}
			if g.r.IntN(4) > 0 {
				r.Results = []TrackerAnnounceResult{}
				for range g.r.IntN(20) {
					r.Results = append(r.Results, TrackerAnnounceResult{Index: g.u64(), Code: g.str(), Message: g.str()})
				}
			}
			return r
		}},
}

// gen makes random field values, biased to msgpack's size-class edges.
// gen makes messages with edge-case values. small leaves out the long
// strings and byte slices (tens of kilobytes), for fuzz seeds: the fuzzer
// minimizes every seed that finds new coverage, and a long one takes it
// the whole fuzz time.
type gen struct {
	r     *rand.Rand
	small bool
}

func (g *gen) bool() bool { return g.r.IntN(2) == 0 }
func (g *gen) u64() uint64 {
	edges := []uint64{0, 127, 128, 255, 256, math.MaxUint16, 1 << 16, math.MaxUint32, 1 << 32, math.MaxUint64}
	if g.bool() {
		return edges[g.r.IntN(len(edges))]
	}
	return g.r.Uint64() >> g.r.IntN(64)
}
func (g *gen) i64() int64 {
	edges := []int64{0, -1, -32, -33, 127, 128, -128, -129, math.MaxInt16, math.MaxInt16 + 1, math.MinInt16, math.MinInt16 - 1, math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxInt64, math.MinInt64}
	if g.bool() {
		return edges[g.r.IntN(len(edges))]
	}
	return int64(g.r.Uint64()) >> g.r.IntN(64)
}
func (g *gen) str() string {
	lens := []int{0, 1, 15, 16, 127, 128, 40000}
	if g.small {
		lens = lens[:6]
	}
	return strings.Repeat("é", lens[g.r.IntN(len(lens))]) + strings.Repeat("a", g.r.IntN(3))
}
func (g *gen) bytes() []byte {
	if g.r.IntN(4) == 0 {
		return nil
	}
	lens := []int{0, 1, 32, 255, 256, 70000}
	if g.small {
		lens = lens[:5]
	}
	b := make([]byte, lens[g.r.IntN(len(lens))])
	g.fill(b)
	return b
}
func (g *gen) fill(b []byte) {
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
}
func (g *gen) header() WriteHeader {
	return WriteHeader{PeerID: g.str(), Key: g.bytes(), RequestID: g.u64(), Forwarded: g.bool()}
}
func (g *gen) file() FileEntry {
	return FileEntry{ID: g.str(), Name: g.str(), Size: g.i64(), PieceSize: g.i64()}
}
func (g *gen) files() []FileEntry {
	if g.r.IntN(4) == 0 {
		return nil
	}
	fs := []FileEntry{}
	for range g.r.IntN(20) {
		fs = append(fs, g.file())
	}
	return fs
}

// checkCodec holds one message to the contract of the hand-written codec:
// the same bytes as the reflective codec, and the same value back from
// those bytes as the reflective decoder gives.
func checkCodec(t *testing.T, tc codecCase, v any) {
	t.Helper()
	want, err := transport.Marshal(tc.plain(v))
	if err != nil {
		t.Fatal(err)
	}
	got := v.(wire.Encoder).AppendWire(nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s %+v:\nhand-written %x\nreflective   %x", tc.name, v, got[:min(len(got), 96)], want[:min(len(want), 96)])
	}
	fast := tc.fast()
	if err := fast.DecodeWire(want); err != nil {
		t.Fatalf("%s: hand-written decoder refused the reflective encoding: %v", tc.name, err)
	}
	slow := tc.fast()
	if err := transport.Unmarshal(want, tc.plain(slow)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%s: hand-written decoder gave\n%+v\nthe reflective\n%+v", tc.name, fast, slow)
	}
}

// The hot messages' hand-written codecs write the reflective codec's
// bytes and read them back to the reflective decoder's values, so masters
// with and without them interoperate during a rolling upgrade.
func TestWireMatchesReflective(t *testing.T) {
	for _, tc := range codecCases {
		t.Run(tc.name, func(t *testing.T) {
			g := &gen{r: rand.New(rand.NewPCG(7, uint64(len(tc.name))))}
			checkCodec(t, tc, tc.fast()) // the zero message
			for range 300 {
				checkCodec(t, tc, tc.gen(g))
			}
		})
	}
}

// Every field of a hot message is written by its hand-written encoder:
// a field added to the struct but not to the codec would be silently
// dropped on the wire. A message with every field (recursively) set must
// still encode to the reflective codec's bytes.
func TestWireCoversEveryField(t *testing.T) {
	for _, tc := range codecCases {
		v := tc.fast()
		setAll(reflect.ValueOf(v).Elem())
		checkCodec(t, tc, v)
	}
}

// setAll sets every field (recursively) to a non-zero value.
func setAll(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			setAll(v.Field(i))
		}
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(-5)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(200)
	case reflect.Array:
		for i := range v.Len() {
			setAll(v.Index(i))
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			setAll(s.Index(i))
		}
		v.Set(s)
	}
}

// Arbitrary bytes never crash a hand-written decoder, and whatever one
// accepts the reflective decoder reads the same way, and it survives a
// round trip through the hand-written encoder.
func FuzzWireDecode(f *testing.F) {
	g := &gen{r: rand.New(rand.NewPCG(1, 1)), small: true}
	for _, tc := range codecCases {
		f.Add(tc.gen(g).(wire.Encoder).AppendWire(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, tc := range codecCases {
			fast := tc.fast()
			if fast.DecodeWire(b) != nil {
				if !reflect.DeepEqual(fast, tc.fast()) {
					t.Fatalf("%s: a failed decode left %+v, want the zero message", tc.name, fast)
				}
				continue
			}
			slow := tc.fast()
			if transport.Unmarshal(b, tc.plain(slow)) == nil && !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s: %x: hand-written decoder gave\n%+v\nthe reflective\n%+v", tc.name, b, fast, slow)
			}
			again := tc.fast()
			if err := again.DecodeWire(fast.AppendWire(nil)); err != nil || !reflect.DeepEqual(again, fast) {
				t.Fatalf("%s: %+v does not survive a round trip: %+v, %v", tc.name, fast, again, err)
			}
		}
	})
}

// Round trip of generated messages through the hand-written codec alone,
// from fuzzed seeds.
func FuzzWireRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Fuzz(func(t *testing.T, s1, s2 uint64) {
		g := &gen{r: rand.New(rand.NewPCG(s1, s2))}
		for _, tc := range codecCases {
			checkCodec(t, tc, tc.gen(g))
		}
	})
}
