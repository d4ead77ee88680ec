package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleCommands(tb testing.TB) []Command {
	return []Command{
		joinA(1),
		JoinPeer{Peer: "p.1_x-Y", Token: tokB, Addr: "[2001:db8::1]:65535", RequestID: 1<<64 - 1, Time: -5},
		LeavePeer{Peer: "alice", Token: tokA, RequestID: 9},
		regA(2, meta(1, "ünïcødé name.txt"), meta(2, strings.Repeat("n", MaxNameLen))),
		regA(3),
		UnregisterFiles{Peer: "alice", Token: tokA, RequestID: 4, Files: []FileID{fid(1), fid(1)}},
		ExpirePeers{Peers: []PeerID{"a", "b"}, Time: 1 << 62},
		ExpirePeers{},
		Batch{Commands: [][]byte{mustEncode(tb, joinA(1)), {byte(CmdJoinPeer), 1, 0xc1}}},
		Batch{},
		keyed(ann(spA, "10.0.0.1", SwarmCompleted, true, 1<<60), 1<<32-1),
		Announce{InfoHash: ihY, Peer: spB, IP: ip("2001:db8::1"), Event: SwarmStopped, Time: -1},
		ExpireSwarmPeers{Entries: []SwarmRef{{ihX, spA, [16]byte{}}, {ihY, spB, [16]byte{}}}, Time: 5},
		ExpireSwarmPeers{},
		TrackerPolicy{SetMode: true, Mode: TrackerAllowlist, Allow: []InfoHash{ihX}, Deny: []InfoHash{ihY}, RequestID: 3},
		TrackerPolicy{RequestID: 1},
		Batch{Commands: [][]byte{mustEncode(tb, ann(spA, "10.0.0.1", SwarmUpdate, false, 1)), mustEncode(tb, TrackerPolicy{RequestID: 2})}},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, c := range sampleCommands(t) {
		t.Run(c.Type().String(), func(t *testing.T) {
			b, err := Encode(c)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if CommandType(b[0]) != c.Type() || b[1] != CommandVersion {
				t.Fatalf("header: got % x, want %02x %02x", b[:2], c.Type(), CommandVersion)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("Decode(Encode(c)): got %#v, want %#v", got, c)
			}
		})
	}
}

// A pointer to a command encodes as the command itself.
func TestEncodeAcceptsPointers(t *testing.T) {
	j := joinA(1)
	want := mustEncode(t, j)
	if got, err := Encode(&j); err != nil || !bytes.Equal(got, want) {
		t.Errorf("Encode(&j): got %x, %v; want %x", got, err, want)
	}
}

func TestEncodeRejectsInvalidCommands(t *testing.T) {
	var nilJoin *JoinPeer
	for _, tc := range []struct {
		name string
		cmd  Command
	}{
		{"nil", nil},
		{"nil pointer", nilJoin},
		{"zero request id", JoinPeer{Peer: "a", Token: tokA, Addr: "h:1"}},
		{"nested batch", Batch{Commands: [][]byte{mustEncode(t, Batch{})}}},
		{"short batch element", Batch{Commands: [][]byte{{1}}}},
		{"too many batch elements", Batch{Commands: make([][]byte, MaxBatchCommands+1)}},
		{"too many peers", ExpirePeers{Peers: make([]PeerID, MaxPeersPerExpire+1)}},
		{"too many unregistrations", UnregisterFiles{Peer: "a", Token: tokA, RequestID: 1, Files: make([]FileID, MaxFilesPerCommand+1)}},
		{"oversized", Batch{Commands: [][]byte{append([]byte{1, 1}, make([]byte, MaxCommandSize)...)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := Encode(tc.cmd); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %d bytes, %v; want ErrInvalid", len(b), err)
			}
		})
	}
}

// Hostile bodies are rejected before the codec sizes anything from them.
func TestDecodeRejectsHostileBodies(t *testing.T) {
	hdr := []byte{byte(CmdRegisterFiles), 1}
	deep := append(bytes.Repeat([]byte{0x91}, 100), 0xc0)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"array claiming 4G elements", []byte{0x94, 0xa1, 'a', 0xc4, 0x00, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"map claiming 64K pairs", []byte{0xde, 0xff, 0xff}},
		{"string longer than input", []byte{0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'}},
		{"deep nesting", deep},
		{"reserved byte", []byte{0xc1}},
		{"two values", []byte{0xc0, 0xc0}},
		{"empty body", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := Decode(append(hdr, tc.body...)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %#v, %v; want ErrInvalid", c, err)
			}
		})
	}
}

func TestCheckMsgpack(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"nil", []byte{0xc0}, true},
		{"fixint", []byte{0x05}, true},
		{"negative fixint", []byte{0xff}, true},
		{"uint64", []byte{0xcf, 1, 2, 3, 4, 5, 6, 7, 8}, true},
		{"short uint64", []byte{0xcf, 1, 2}, false},
		{"fixstr", []byte{0xa2, 'h', 'i'}, true},
		{"str8", []byte{0xd9, 1, 'x'}, true},
		{"bin16", []byte{0xc5, 0, 1, 'x'}, true},
		{"fixext4", []byte{0xd6, 1, 1, 2, 3, 4}, true},
		{"ext8", []byte{0xc7, 2, 9, 1, 2}, true},
		{"float32", []byte{0xca, 0, 0, 0, 0}, true},
		{"nested", []byte{0x92, 0x91, 0x01, 0x81, 0xa1, 'k', 0x02}, true},
		{"array16 with elements", []byte{0xdc, 0, 2, 1, 2}, true},
		{"array16 missing element", []byte{0xdc, 0, 2, 1}, false},
		{"map32 over limit", []byte{0xdf, 0, 1, 0, 0}, false},
		{"empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMsgpack(tc.in, 4, 1000)
			if (err == nil) != tc.ok {
				t.Fatalf("checkMsgpack(% x): got %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts round-trips:
// Encode(Decode(b)) succeeds, decodes to an equal command, and is a fixed
// point of Encode∘Decode.
func FuzzDecode(f *testing.F) {
	for _, c := range sampleCommands(f) {
		f.Add(mustEncode(f, c))
	}
	for _, l := range newCmdGen(f, 3).log(50) {
		f.Add(l.Data)
	}
	f.Add([]byte{byte(CmdRegisterFiles), 1, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownCommand) {
				t.Fatalf("Decode error %v wraps neither ErrInvalid nor ErrUnknownCommand", err)
			}
			return
		}
		enc, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(Decode(b)) = %v for %#v", err, c)
		}
		c2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(b))) = %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: got %#v, want %#v", c2, c)
		}
		if enc2 := mustEncode(t, c2); !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode is not a fixed point: %x then %x", enc, enc2)
		}
	})
}

// batchableSamples returns the encoding of every sample command that may
// go in a Batch.
func batchableSamples(tb testing.TB) [][]byte {
	var cmds [][]byte
	for _, c := range sampleCommands(tb) {
		if _, isBatch := c.(Batch); !isBatch {
			cmds = append(cmds, mustEncode(tb, c))
		}
	}
	return cmds
}

// The Batch fast path accepts only what the codec accepts, and decodes it
// to the same commands: fed every encoding the fuzzer finds, whenever it
// says ok, the codec must agree.
func FuzzDecodeBatchFast(f *testing.F) {
	cmds := batchableSamples(f)
	for _, n := range []int{1, 2, 15, 16, len(cmds)} {
		b := mustEncode(f, Batch{Commands: cmds[:min(n, len(cmds))]})
		f.Add(b[2:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := decodeBatchFast(body)
		if !ok {
			return
		}
		var slow Batch
		if err := checkMsgpack(body, maxBodyDepth, maxContainerSize); err != nil {
			t.Fatalf("fast path accepted %x, which checkMsgpack refuses: %v", body, err)
		}
		if err := decodeBody(nil, body, &slow); err != nil {
			t.Fatalf("fast path accepted %x, which the codec refuses: %v", body, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast path %#v, codec %#v", fast, slow)
		}
	})
}

// Encode's Batch takes the fast path, whose commands alias the body.
func TestBatchDecodesWithoutCopying(t *testing.T) {
	cmds := batchableSamples(t)
	b := mustEncode(t, Batch{Commands: cmds})
	c, ok := decodeBatchFast(b[2:])
	if !ok || len(c.Commands) != len(cmds) {
		t.Fatalf("fast path: ok %t, %d commands; want ok and %d", ok, len(c.Commands), len(cmds))
	}
	for i := range cmds {
		if !bytes.Equal(c.Commands[i], cmds[i]) {
			t.Fatalf("command %d: %x, want %x", i, c.Commands[i], cmds[i])
		}
	}
	i := bytes.Index(b, cmds[0])
	b[i] ^= 0xff
	if c.Commands[0][0] != b[i] {
		t.Fatal("the fast path copied the commands")
	}
}
