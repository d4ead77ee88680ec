package peer

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The piece protocol, spoken on a transport.StreamPiece connection after the
// stream-kind byte. The downloader sends fixed-size requests and may send
// many before reading any response (pipelining); the server answers them in
// order, one response each.
//
// Request, 38 bytes:
//
//	version  1 byte   protoVersion (1)
//	op       1 byte   opHashes (1) or opPiece (2)
//	file ID  32 bytes the raw Merkle root
//	index    4 bytes  big-endian piece index; 0 for opHashes
//
// Response: a 5-byte header, then Len bytes of payload:
//
//	status   1 byte   statusOK, statusNotFound, statusBadRequest, statusBusy,
//	                  statusError, statusChanged
//	len      4 bytes  big-endian payload length
//
// With statusOK the payload is the piece-hash list (32 bytes per piece, in
// order) for opHashes, or the raw piece bytes for opPiece. Otherwise it is a
// UTF-8 message of at most maxErrorMessage bytes. statusNotFound (this peer
// does not serve the file) and statusChanged (the file changed on disk since
// this peer registered it: its size or mtime differ, or the piece read no
// longer hashes to the registered piece hash; the server sends no bad data
// and rehashes the file) leave the connection open; after statusBadRequest,
// statusBusy or statusError the server closes it. A downloader treats a
// holder answering statusChanged as stale for that file, not as a liar. A
// downloader older than statusChanged sees an unknown status and drops the
// holder for the file, as it would have for the bad piece this replaces.
//
// The downloader knows from the index how long every answer must be, so it
// rejects any other length before reading the payload: a holder cannot make
// it allocate more than one piece.
const (
	protoVersion = 1

	opHashes byte = 1
	opPiece  byte = 2

	requestLen    = 38
	respHeaderLen = 5

	statusOK         byte = 0
	statusNotFound   byte = 1
	statusBadRequest byte = 2
	statusBusy       byte = 3
	statusError      byte = 4
	statusChanged    byte = 5

	maxErrorMessage = 1024
)

// errBadMessage is wrapped by every protocol decoding error.
var errBadMessage = errors.New("malformed piece-protocol message")

// pieceRequest is one request of the piece protocol.
type pieceRequest struct {
	Op    byte
	File  [32]byte
	Index uint32
}

func (r pieceRequest) fileID() string { return hex.EncodeToString(r.File[:]) }

// appendTo appends the request's 38-byte encoding to b.
func (r pieceRequest) appendTo(b []byte) []byte {
	b = append(b, protoVersion, r.Op)
	b = append(b, r.File[:]...)
	return binary.BigEndian.AppendUint32(b, r.Index)
}

// decodeRequest parses one request. It fails for a wrong length, an unknown
// version or op, or an opHashes request with a non-zero index.
func decodeRequest(b []byte) (pieceRequest, error) {
	var r pieceRequest
	if len(b) != requestLen {
		return r, fmt.Errorf("%w: request is %d bytes, want %d", errBadMessage, len(b), requestLen)
	}
	if b[0] != protoVersion {
		return r, fmt.Errorf("%w: protocol version %d, want %d", errBadMessage, b[0], protoVersion)
	}
	r.Op = b[1]
	copy(r.File[:], b[2:34])
	r.Index = binary.BigEndian.Uint32(b[34:38])
	switch r.Op {
	case opPiece:
	case opHashes:
		if r.Index != 0 {
			return r, fmt.Errorf("%w: hash-list request with index %d", errBadMessage, r.Index)
		}
	default:
		return r, fmt.Errorf("%w: unknown op %d", errBadMessage, r.Op)
	}
	return r, nil
}

// respHeader is the header of one response.
type respHeader struct {
	Status byte
	Len    uint32
}

func (h respHeader) encode() [respHeaderLen]byte {
	var b [respHeaderLen]byte
	b[0] = h.Status
	binary.BigEndian.PutUint32(b[1:], h.Len)
	return b
}

// decodeRespHeader parses a response header. It fails for an unknown status
// or an error message longer than maxErrorMessage.
func decodeRespHeader(b []byte) (respHeader, error) {
	var h respHeader
	if len(b) != respHeaderLen {
		return h, fmt.Errorf("%w: response header is %d bytes, want %d", errBadMessage, len(b), respHeaderLen)
	}
	h.Status = b[0]
	h.Len = binary.BigEndian.Uint32(b[1:])
	switch h.Status {
	case statusOK:
	case statusNotFound, statusBadRequest, statusBusy, statusError, statusChanged:
		if h.Len > maxErrorMessage {
			return h, fmt.Errorf("%w: error message of %d bytes, limit %d", errBadMessage, h.Len, maxErrorMessage)
		}
	default:
		return h, fmt.Errorf("%w: unknown status %d", errBadMessage, h.Status)
	}
	return h, nil
}

// errorResponse encodes a non-OK response: header and message, the message
// cut to maxErrorMessage bytes at a rune boundary.
func errorResponse(status byte, msg string) []byte {
	for len(msg) > maxErrorMessage {
		_, n := utf8.DecodeLastRuneInString(msg)
		msg = msg[:len(msg)-n]
	}
	h := respHeader{Status: status, Len: uint32(len(msg))}.encode()
	return append(h[:], msg...)
}

// remoteError is a non-OK response as the downloader sees it.
type remoteError struct {
	Status byte
	Msg    string
}

func (e *remoteError) Error() string {
	name := map[byte]string{statusNotFound: "not found", statusBadRequest: "bad request", statusBusy: "busy", statusError: "error", statusChanged: "file changed"}[e.Status]
	return fmt.Sprintf("holder answered %s: %s", name, e.Msg)
}

// errHolderChanged is matched (errors.Is) by a statusChanged answer: the
// holder's copy of the file changed since it registered it.
var errHolderChanged = errors.New("the holder's copy of the file changed since it registered it")

// Is reports whether target is errHolderChanged and the holder answered
// statusChanged.
func (e *remoteError) Is(target error) bool {
	return target == errHolderChanged && e.Status == statusChanged
}
