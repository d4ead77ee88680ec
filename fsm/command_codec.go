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
	isNil := false
	switch c := cmd.(type) {
	case nil:
		isNil = true
	case *JoinPeer:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *LeavePeer:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *RegisterFiles:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *UnregisterFiles:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *ExpirePeers:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *Batch:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *Announce:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *ExpireSwarmPeers:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *TrackerPolicy:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *RevokeCerts:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *UnrevokeCerts:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *SetConnIDSecret:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *AnnounceBatch:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *TrackerMember:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *TorrentFactors:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *ClientPrefixes:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	case *PrivateAnnounceBatch:
		isNil = c == nil
		if !isNil {
			cmd = *c
		}
	}
	if isNil {
		return nil, fmt.Errorf("%w: nil command", ErrInvalid)
	}
	return cmd, nil
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
		var c JoinPeer
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdLeavePeer:
		var c LeavePeer
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdRegisterFiles:
		var c RegisterFiles
		err = decodeBody(dec, body, &c)
		if len(c.Files) == 0 {
			c.Files = nil
		}
		cmd = c
	case CmdUnregisterFiles:
		var c UnregisterFiles
		err = decodeBody(dec, body, &c)
		if len(c.Files) == 0 {
			c.Files = nil
		}
		cmd = c
	case CmdExpirePeers:
		var c ExpirePeers
		err = decodeBody(dec, body, &c)
		if len(c.Peers) == 0 {
			c.Peers = nil
		}
		cmd = c
	case CmdBatch:
		var c Batch
		err = decodeBody(dec, body, &c)
		if len(c.Commands) == 0 {
			c.Commands = nil
		}
		cmd = c
	case CmdAnnounce:
		var c Announce
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdExpireSwarmPeers:
		var c ExpireSwarmPeers
		err = decodeBody(dec, body, &c)
		if len(c.Entries) == 0 {
			c.Entries = nil
		}
		if len(c.Swarms) == 0 {
			c.Swarms = nil
		}
		cmd = c
	case CmdTrackerPolicy:
		var c TrackerPolicy
		err = decodeBody(dec, body, &c)
		if len(c.Allow) == 0 {
			c.Allow = nil
		}
		if len(c.Deny) == 0 {
			c.Deny = nil
		}
		cmd = c
	case CmdRevokeCerts:
		var c RevokeCerts
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdUnrevokeCerts:
		var c UnrevokeCerts
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdSetConnIDSecret:
		var c SetConnIDSecret
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdTrackerMember:
		var c TrackerMember
		err = decodeBody(dec, body, &c)
		if len(c.Passkey) == 0 {
			c.Passkey = nil
		}
		cmd = c
	case CmdTorrentFactors:
		var c TorrentFactors
		err = decodeBody(dec, body, &c)
		cmd = c
	case CmdClientPrefixes:
		var c ClientPrefixes
		err = decodeBody(dec, body, &c)
		if len(c.Allow) == 0 {
			c.Allow = nil
		}
		if len(c.Deny) == 0 {
			c.Deny = nil
		}
		cmd = c
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
