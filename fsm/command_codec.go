package fsm

// The binary encoding of commands: a version byte, a type byte, then a
// msgpack body (see newMsgpackHandle). Types and validation are in command.go.

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// newMsgpackHandle returns the codec configuration for command bodies:
// structs as positional arrays (compact, and field order is fixed by the
// version byte), []byte as msgpack bin.
func newMsgpackHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.StructToArray = true
	h.MaxInitLen = 1024
	return h
}

// msgpackHandle is shared by every Encode and Decode call: the codec caches
// per-type reflection data in the handle, and building one per call would
// cost more than the encoding. It is configured once and never changed, which
// makes it safe for concurrent use.
var msgpackHandle = newMsgpackHandle()

// Limits applied to a command body before the codec sees it.
const (
	maxBodyDepth     = 6
	maxContainerSize = max(MaxFilesPerCommand, MaxPeersPerExpire, MaxBatchCommands, MaxSwarmRefsPerExpire, MaxPolicyHashes)
)

// Encode validates cmd and returns its log encoding: byte 0 is cmd.Type(),
// byte 1 is CommandVersion, the rest is the msgpack body. Pointers to the
// command structs are accepted too. Errors wrap ErrInvalid. Encode is safe
// for concurrent use.
func Encode(cmd Command) ([]byte, error) {
	cmd, err := deref(cmd)
	if err != nil {
		return nil, err
	}
	if c, ok := cmd.(AnnounceBatch); ok {
		return appendAnnounceBatch([]byte{byte(CmdAnnounceBatch), CommandVersion}, c)
	}
	if c, ok := cmd.(PrivateAnnounceBatch); ok {
		return appendPrivateAnnounceBatch([]byte{byte(CmdPrivateAnnounceBatch), CommandVersion}, c)
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	body := make([]byte, 0, 128)
	if err := codec.NewEncoderBytes(&body, msgpackHandle).Encode(cmd); err != nil {
		return nil, fmt.Errorf("%w: encode %v: %v", ErrInvalid, cmd.Type(), err)
	}
	if 2+len(body) > MaxCommandSize {
		return nil, fmt.Errorf("%w: encoded %v is %d bytes, limit %d", ErrInvalid, cmd.Type(), 2+len(body), MaxCommandSize)
	}
	out := make([]byte, 2+len(body))
	out[0] = byte(cmd.Type())
	out[1] = CommandVersion
	copy(out[2:], body)
	return out, nil
}

// deref turns a pointer to a command struct into the struct.
func deref(cmd Command) (Command, error) {
	ok := true
	switch c := cmd.(type) {
	case nil:
		ok = false
	case *JoinPeer:
		cmd, ok = derefPtr(c)
	case *LeavePeer:
		cmd, ok = derefPtr(c)
	case *RegisterFiles:
		cmd, ok = derefPtr(c)
	case *UnregisterFiles:
		cmd, ok = derefPtr(c)
	case *ExpirePeers:
		cmd, ok = derefPtr(c)
	case *Batch:
		cmd, ok = derefPtr(c)
	case *Announce:
		cmd, ok = derefPtr(c)
	case *ExpireSwarmPeers:
		cmd, ok = derefPtr(c)
	case *TrackerPolicy:
		cmd, ok = derefPtr(c)
	case *RevokeCerts:
		cmd, ok = derefPtr(c)
	case *UnrevokeCerts:
		cmd, ok = derefPtr(c)
	case *SetConnIDSecret:
		cmd, ok = derefPtr(c)
	case *AnnounceBatch:
		cmd, ok = derefPtr(c)
	case *TrackerMember:
		cmd, ok = derefPtr(c)
	case *TorrentFactors:
		cmd, ok = derefPtr(c)
	case *ClientPrefixes:
		cmd, ok = derefPtr(c)
	case *PrivateAnnounceBatch:
		cmd, ok = derefPtr(c)
	}
	if !ok {
		return nil, fmt.Errorf("%w: nil command", ErrInvalid)
	}
	return cmd, nil
}

// derefPtr owns deref's rule for one command type: the struct p points to,
// or ok false if p is nil.
func derefPtr[C Command](p *C) (cmd Command, ok bool) {
	if p == nil {
		return nil, false
	}
	return *p, true
}

// Decode parses bytes produced by Encode and returns the command as a value
// (JoinPeer, not *JoinPeer). A decoded command has passed Validate; empty
// lists decode as nil. An unknown type byte or version yields an error
// wrapping ErrUnknownCommand; anything else malformed — truncated or trailing
// bytes, a body nested too deep or with a list over its limit, fields of the
// wrong kind, a Batch inside a Batch, input over MaxCommandSize — wraps
// ErrInvalid. Decode never panics, whatever the input, and is safe for
// concurrent use.
func Decode(b []byte) (Command, error) { return decode(b, nil) }

// decode is Decode with an optional decoder to reuse; the FSM keeps one
// because Apply runs on a single goroutine.
func decode(b []byte, dec *codec.Decoder) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: command is %d bytes, need at least 2", ErrInvalid, len(b))
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: command is %d bytes, limit %d", ErrInvalid, len(b), MaxCommandSize)
	}
	t, v := CommandType(b[0]), b[1]
	if v == 0 || v > CommandVersion {
		return nil, fmt.Errorf("%w: %v version %d (this build reads 1..%d)", ErrUnknownCommand, t, v, CommandVersion)
	}
	body := b[2:]
	if t == CmdAnnounceBatch {
		return decodeAnnounceBatch(body)
	}
	if t == CmdPrivateAnnounceBatch {
		return decodePrivateAnnounceBatch(body)
	}
	if t == CmdBatch {
		if c, ok := decodeBatchFast(body); ok {
			if err := c.Validate(); err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	if err := checkMsgpack(body, maxBodyDepth, maxContainerSize); err != nil {
		return nil, fmt.Errorf("%w: %v body: %v", ErrInvalid, t, err)
	}
	var cmd Command
	var err error
	switch t {
	case CmdJoinPeer:
		cmd, err = decodeMsgpack[JoinPeer](dec, body, nil)
	case CmdLeavePeer:
		cmd, err = decodeMsgpack[LeavePeer](dec, body, nil)
	case CmdRegisterFiles:
		cmd, err = decodeMsgpack(dec, body, func(c *RegisterFiles) { c.Files = nilIfEmpty(c.Files) })
	case CmdUnregisterFiles:
		cmd, err = decodeMsgpack(dec, body, func(c *UnregisterFiles) { c.Files = nilIfEmpty(c.Files) })
	case CmdExpirePeers:
		cmd, err = decodeMsgpack(dec, body, func(c *ExpirePeers) { c.Peers = nilIfEmpty(c.Peers) })
	case CmdBatch:
		cmd, err = decodeMsgpack(dec, body, func(c *Batch) { c.Commands = nilIfEmpty(c.Commands) })
	case CmdAnnounce:
		cmd, err = decodeMsgpack[Announce](dec, body, nil)
	case CmdExpireSwarmPeers:
		cmd, err = decodeMsgpack(dec, body, func(c *ExpireSwarmPeers) {
			c.Entries, c.Swarms = nilIfEmpty(c.Entries), nilIfEmpty(c.Swarms)
		})
	case CmdTrackerPolicy:
		cmd, err = decodeMsgpack(dec, body, func(c *TrackerPolicy) {
			c.Allow, c.Deny = nilIfEmpty(c.Allow), nilIfEmpty(c.Deny)
		})
	case CmdRevokeCerts:
		cmd, err = decodeMsgpack[RevokeCerts](dec, body, nil)
	case CmdUnrevokeCerts:
		cmd, err = decodeMsgpack[UnrevokeCerts](dec, body, nil)
	case CmdSetConnIDSecret:
		cmd, err = decodeMsgpack[SetConnIDSecret](dec, body, nil)
	case CmdTrackerMember:
		cmd, err = decodeMsgpack(dec, body, func(c *TrackerMember) { c.Passkey = nilIfEmpty(c.Passkey) })
	case CmdTorrentFactors:
		cmd, err = decodeMsgpack[TorrentFactors](dec, body, nil)
	case CmdClientPrefixes:
		cmd, err = decodeMsgpack(dec, body, func(c *ClientPrefixes) {
			c.Allow, c.Deny = nilIfEmpty(c.Allow), nilIfEmpty(c.Deny)
		})
	default:
		return nil, fmt.Errorf("%w: type %d", ErrUnknownCommand, uint8(t))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v body: %v", ErrInvalid, t, err)
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// decodeMsgpack owns the decoding of one msgpack-bodied command type: it
// decodes body into a C with decodeBody and returns it as a Command value
// (C, not *C). tidy, if not nil, runs on the result first; each type's
// tidy applies Decode's rule that an empty list decodes as nil.
func decodeMsgpack[C Command](dec *codec.Decoder, body []byte, tidy func(*C)) (Command, error) {
	var c C
	err := decodeBody(dec, body, &c)
	if tidy != nil {
		tidy(&c)
	}
	return c, err
}

// nilIfEmpty returns s, or nil if s is empty: the codec decodes an empty
// list as an empty slice, and Decode promises nil.
func nilIfEmpty[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}

// decodeBody runs the codec over a body that checkMsgpack accepted. The codec
// turns its own internal panics into errors; the recover here is a second
// line of defence so that no input can crash the FSM goroutine.
func decodeBody(dec *codec.Decoder, body []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("codec panic: %v", r)
		}
	}()
	if dec == nil {
		return codec.NewDecoderBytes(body, msgpackHandle).Decode(v)
	}
	dec.ResetBytes(body)
	return dec.Decode(v)
}

// decodeBatchFast parses a Batch body as Encode writes it — a one-element
// array (the struct) holding an array of bin values — without copying the
// commands: they alias body. A batch carries the group commit's whole
// entry, a private tracker's credits of a second among them (a megabyte
// and more), and the codec copied every byte of it before each command's
// own decoder copied what it keeps. ok is false for any other encoding,
// which the codec then judges, so this path can only accept more quickly,
// never differently.
func decodeBatchFast(body []byte) (c Batch, ok bool) {
	if len(body) < 2 || body[0] != 0x91 {
		return Batch{}, false
	}
	b := body[1:]
	var n int
	switch h := b[0]; {
	case h&0xf0 == 0x90:
		n, b = int(h&0x0f), b[1:]
	case h == 0xdc && len(b) >= 3:
		n, b = int(binary.BigEndian.Uint16(b[1:])), b[3:]
	case h == 0xdd && len(b) >= 5:
		n, b = int(binary.BigEndian.Uint32(b[1:])), b[5:]
	default:
		return Batch{}, false
	}
	if n == 0 || n > MaxBatchCommands || n > len(b) {
		return Batch{}, false
	}
	c.Commands = make([][]byte, n)
	for i := range n {
		var l int
		switch {
		case len(b) >= 2 && b[0] == 0xc4:
			l, b = int(b[1]), b[2:]
		case len(b) >= 3 && b[0] == 0xc5:
			l, b = int(binary.BigEndian.Uint16(b[1:])), b[3:]
		case len(b) >= 5 && b[0] == 0xc6:
			l, b = int(binary.BigEndian.Uint32(b[1:])), b[5:]
		default:
			return Batch{}, false
		}
		if l > len(b) {
			return Batch{}, false
		}
		c.Commands[i], b = b[:l:l], b[l:]
	}
	if len(b) != 0 {
		return Batch{}, false
	}
	return c, true
}
