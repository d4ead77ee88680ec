package client

import (
	"strconv"

	"fileshare/transport/wire"
)

// Hand-written codecs for the hot messages: registration, heartbeats,
// lookups and the tracker relay. They write exactly the bytes the
// reflective codec writes (fields by name, embedded structs flattened,
// `omitempty` fields left out when zero), so masters with and without
// them interoperate; TestWireMatchesReflective holds them to it. Decoding
// falls back to the reflective codec on anything unusual (see package
// wire), so a message added to one of these types must be added here too
// or it is dropped on the fast path: TestWireCoversEveryField catches that.

// finish ends a decode: on failure the message is zeroed.
func finish[T any](m *T, r *wire.Reader) error {
	if err := r.Err(); err != nil {
		var zero T
		*m = zero
		return err
	}
	return nil
}

// minEntryBytes is less than the encoding of any FileEntry, HolderEntry
// or SwarmRef takes (their keys alone take more), so an array count is
// checked against the bytes that remain before anything is allocated: a
// frame cannot make the fast path allocate more than a few times its size.
const minEntryBytes = 16

func readInt(r *wire.Reader) int { return int(r.Int(strconv.IntSize)) }

// appendFields appends the WriteHeader fields that sort after
// "Forwarded"; the caller wrote those before it.
func (m *WriteHeader) appendFields(b []byte) []byte {
	b = wire.AppendString(b, "Key")
	b = wire.AppendBytes(b, m.Key)
	b = wire.AppendString(b, "PeerID")
	b = wire.AppendString(b, m.PeerID)
	b = wire.AppendString(b, "RequestID")
	return wire.AppendUint(b, m.RequestID)
}

func appendForwarded(b []byte, fwd bool) []byte {
	if !fwd {
		return b
	}
	return wire.AppendBool(wire.AppendString(b, "Forwarded"), true)
}

// appendList owns the encoding of a slice field: a nil slice as msgpack
// nil (what the reflective codec writes for it), any other as an array of
// its elements, each written by appendElem.
func appendList[T any](b []byte, list []T, appendElem func(*T, []byte) []byte) []byte {
	if list == nil {
		return wire.AppendNil(b)
	}
	b = wire.AppendArrayHeader(b, len(list))
	for i := range list {
		b = appendElem(&list[i], b)
	}
	return b
}

// decodeList reads what appendList wrote: nil as a nil slice, else an
// array whose count is checked against the bytes left (at least minElem
// an element) before the slice is allocated, each element read by
// decodeElem.
func decodeList[T any](r *wire.Reader, minElem int, decodeElem func(*T, *wire.Reader)) []T {
	if r.PeekNil() {
		return nil
	}
	list := make([]T, r.ArrayHeader(minElem))
	for i := range list {
		decodeElem(&list[i], r)
	}
	return list
}

// AppendWire implements wire.Encoder.
func (m *RegisterRequest) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(4, m.Forwarded))
	b = wire.AppendString(b, "Files")
	b = appendList(b, m.Files, (*FileEntry).AppendWire)
	b = appendForwarded(b, m.Forwarded)
	return m.WriteHeader.appendFields(b)
}

// DecodeWire implements wire.Decoder.
func (m *RegisterRequest) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		key := r.RawString()
		switch string(key) {
		case "Files":
			m.Files = decodeList(&r, minEntryBytes, (*FileEntry).decode)
		default:
			m.WriteHeader.decodeField(&r, key)
		}
	}
	return finish(m, &r)
}

// decodeField decodes the value of the WriteHeader field key.
func (m *WriteHeader) decodeField(r *wire.Reader, key []byte) {
	switch string(key) {
	case "Forwarded":
		m.Forwarded = r.Bool()
	case "Key":
		m.Key = r.Bytes()
	case "PeerID":
		m.PeerID = r.String()
	case "RequestID":
		m.RequestID = r.Uint(64)
	default:
		r.Fail()
	}
}

// AppendWire implements wire.Encoder.
func (m *FileEntry) AppendWire(b []byte) []byte {
	return m.appendFields(wire.AppendMapHeader(b, 4))
}

// appendFields appends the FileEntry fields, in name order; FileSummary
// writes its Holders, which sorts before them, first.
func (m *FileEntry) appendFields(b []byte) []byte {
	b = wire.AppendString(b, "ID")
	b = wire.AppendString(b, m.ID)
	b = wire.AppendString(b, "Name")
	b = wire.AppendString(b, m.Name)
	b = wire.AppendString(b, "PieceSize")
	b = wire.AppendInt(b, m.PieceSize)
	b = wire.AppendString(b, "Size")
	return wire.AppendInt(b, m.Size)
}

func (m *FileEntry) decode(r *wire.Reader) {
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		m.decodeField(r, r.RawString())
	}
}

func (m *FileEntry) decodeField(r *wire.Reader, key []byte) {
	switch string(key) {
	case "ID":
		m.ID = r.String()
	case "Name":
		m.Name = r.String()
	case "PieceSize":
		m.PieceSize = r.Int(64)
	case "Size":
		m.Size = r.Int(64)
	default:
		r.Fail()
	}
}

// DecodeWire implements wire.Decoder.
func (m *FileEntry) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	m.decode(&r)
	return finish(m, &r)
}

func appendLeader(b []byte, h LeaderHint) []byte { return wire.AppendNonEmpty(b, "Leader", h.Leader) }

// AppendWire implements wire.Encoder.
func (m *WriteReply) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(2, m.Leader != ""))
	b = wire.AppendString(b, "Duplicate")
	b = wire.AppendBool(b, m.Duplicate)
	b = wire.AppendString(b, "Index")
	b = wire.AppendUint(b, m.Index)
	return appendLeader(b, m.LeaderHint)
}

// DecodeWire implements wire.Decoder.
func (m *WriteReply) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Duplicate":
			m.Duplicate = r.Bool()
		case "Index":
			m.Index = r.Uint(64)
		case "Leader":
			m.Leader = r.String()
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}

// AppendWire implements wire.Encoder.
func (m *HeartbeatRequest) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(2, m.Forwarded))
	b = appendForwarded(b, m.Forwarded)
	b = wire.AppendString(b, "Key")
	b = wire.AppendBytes(b, m.Key)
	b = wire.AppendString(b, "PeerID")
	return wire.AppendString(b, m.PeerID)
}

// DecodeWire implements wire.Decoder.
func (m *HeartbeatRequest) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Forwarded":
			m.Forwarded = r.Bool()
		case "Key":
			m.Key = r.Bytes()
		case "PeerID":
			m.PeerID = r.String()
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}

// AppendWire implements wire.Encoder.
func (m *HeartbeatReply) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(1, m.Leader != ""))
	b = appendLeader(b, m.LeaderHint)
	b = wire.AppendString(b, "LeaseMillis")
	return wire.AppendInt(b, m.LeaseMillis)
}

// DecodeWire implements wire.Decoder.
func (m *HeartbeatReply) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Leader":
			m.Leader = r.String()
		case "LeaseMillis":
			m.LeaseMillis = r.Int(64)
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}

// AppendWire implements wire.Encoder.
func (m *LookupRequest) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(2, m.Forwarded))
	b = wire.AppendString(b, "FileID")
	b = wire.AppendString(b, m.FileID)
	b = appendForwarded(b, m.Forwarded)
	b = wire.AppendString(b, "Level")
	return wire.AppendString(b, string(m.Level))
}

// DecodeWire implements wire.Decoder.
func (m *LookupRequest) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "FileID":
			m.FileID = r.String()
		case "Forwarded":
			m.Forwarded = r.Bool()
		case "Level":
			m.Level = ReadLevel(r.String())
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}

// AppendWire implements wire.Encoder.
func (m *LookupReply) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(4, m.Leader != ""))
	b = wire.AppendString(b, "File")
	b = m.File.appendWire(b)
	b = wire.AppendString(b, "Found")
	b = wire.AppendBool(b, m.Found)
	b = wire.AppendString(b, "Holders")
	b = appendList(b, m.Holders, (*HolderEntry).appendWire)
	b = wire.AppendString(b, "Index")
	b = wire.AppendUint(b, m.Index)
	return appendLeader(b, m.LeaderHint)
}

// DecodeWire implements wire.Decoder.
func (m *LookupReply) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "File":
			m.File.decode(&r)
		case "Found":
			m.Found = r.Bool()
		case "Holders":
			m.Holders = decodeList(&r, minEntryBytes, (*HolderEntry).decode)
		case "Index":
			m.Index = r.Uint(64)
		case "Leader":
			m.Leader = r.String()
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}

func (m *FileSummary) appendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, 5)
	b = wire.AppendString(b, "Holders")
	b = wire.AppendInt(b, int64(m.Holders))
	return m.FileEntry.appendFields(b)
}

func (m *FileSummary) decode(r *wire.Reader) {
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		key := r.RawString()
		if string(key) == "Holders" {
			m.Holders = readInt(r)
			continue
		}
		m.FileEntry.decodeField(r, key)
	}
}

func (m *HolderEntry) appendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, 3)
	b = wire.AppendString(b, "Addr")
	b = wire.AppendString(b, m.Addr)
	b = wire.AppendString(b, "Name")
	b = wire.AppendString(b, m.Name)
	b = wire.AppendString(b, "PeerID")
	return wire.AppendString(b, m.PeerID)
}

func (m *HolderEntry) decode(r *wire.Reader) {
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Addr":
			m.Addr = r.String()
		case "Name":
			m.Name = r.String()
		case "PeerID":
			m.PeerID = r.String()
		default:
			r.Fail()
		}
	}
}

// AppendWire implements wire.Encoder.
func (m *TrackerAnnounceRequest) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(8, m.Forwarded, len(m.Priv) > 0))
	b = wire.AppendString(b, "Event")
	b = wire.AppendUint(b, uint64(m.Event))
	b = appendForwarded(b, m.Forwarded)
	b = wire.AppendString(b, "HasKey")
	b = wire.AppendBool(b, m.HasKey)
	b = wire.AppendString(b, "IP")
	b = wire.AppendBytes(b, m.IP[:])
	b = wire.AppendString(b, "InfoHash")
	b = wire.AppendBytes(b, m.InfoHash[:])
	b = wire.AppendString(b, "Key")
	b = wire.AppendUint(b, uint64(m.Key))
	b = wire.AppendString(b, "Peer")
	b = wire.AppendBytes(b, m.Peer[:])
	b = wire.AppendString(b, "Port")
	b = wire.AppendUint(b, uint64(m.Port))
	if len(m.Priv) > 0 {
		b = wire.AppendString(b, "Priv")
		b = wire.AppendBytes(b, m.Priv)
	}
	b = wire.AppendString(b, "Seeder")
	return wire.AppendBool(b, m.Seeder)
}

// DecodeWire implements wire.Decoder.
func (m *TrackerAnnounceRequest) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	m.decode(&r)
	return finish(m, &r)
}

// AppendWire implements wire.Encoder.
func (m *TrackerRenewRequest) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(1, m.Forwarded, len(m.Credits) > 0))
	if len(m.Credits) > 0 {
		b = wire.AppendString(b, "Credits")
		b = appendList(b, m.Credits, (*TrackerAnnounceRequest).AppendWire)
	}
	b = wire.AppendString(b, "Entries")
	b = appendList(b, m.Entries, (*SwarmRef).appendWire)
	return appendForwarded(b, m.Forwarded)
}

func (m *SwarmRef) appendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, 3)
	b = wire.AppendString(b, "IP")
	b = wire.AppendBytes(b, m.IP[:])
	b = wire.AppendString(b, "InfoHash")
	b = wire.AppendBytes(b, m.InfoHash[:])
	b = wire.AppendString(b, "Peer")
	return wire.AppendBytes(b, m.Peer[:])
}

func (m *SwarmRef) decode(r *wire.Reader) {
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "IP":
			r.Array(m.IP[:])
		case "InfoHash":
			r.Array(m.InfoHash[:])
		case "Peer":
			r.Array(m.Peer[:])
		default:
			r.Fail()
		}
	}
}

// DecodeWire implements wire.Decoder.
func (m *TrackerRenewRequest) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Credits":
			m.Credits = decodeList(&r, minEntryBytes, (*TrackerAnnounceRequest).decode)
		case "Entries":
			m.Entries = decodeList(&r, minEntryBytes, (*SwarmRef).decode)
		case "Forwarded":
			m.Forwarded = r.Bool()
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}
