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

func count(n int, opt ...bool) int {
	for _, o := range opt {
		if o {
			n++
		}
	}
	return n
}

// AppendWire implements wire.Encoder.
func (m *RegisterRequest) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, count(4, m.Forwarded))
	b = wire.AppendString(b, "Files")
	if m.Files == nil {
		b = wire.AppendNil(b)
	} else {
		b = wire.AppendArrayHeader(b, len(m.Files))
		for i := range m.Files {
			b = m.Files[i].AppendWire(b)
		}
	}
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
			if r.PeekNil() {
				m.Files = nil
				continue
			}
			k := r.ArrayHeader(minEntryBytes)
			m.Files = make([]FileEntry, k)
			for i := range m.Files {
				m.Files[i].decode(&r)
			}
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
	b = wire.AppendMapHeader(b, 4)
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

func appendLeader(b []byte, h LeaderHint) []byte {
	if h.Leader == "" {
		return b
	}
	return wire.AppendString(wire.AppendString(b, "Leader"), h.Leader)
}

// AppendWire implements wire.Encoder.
func (m *WriteReply) AppendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, count(2, m.Leader != ""))
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
	b = wire.AppendMapHeader(b, count(2, m.Forwarded))
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
	b = wire.AppendMapHeader(b, count(1, m.Leader != ""))
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
	b = wire.AppendMapHeader(b, count(2, m.Forwarded))
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
	b = wire.AppendMapHeader(b, count(4, m.Leader != ""))
	b = wire.AppendString(b, "File")
	b = m.File.appendWire(b)
	b = wire.AppendString(b, "Found")
	b = wire.AppendBool(b, m.Found)
	b = wire.AppendString(b, "Holders")
	if m.Holders == nil {
		b = wire.AppendNil(b)
	} else {
		b = wire.AppendArrayHeader(b, len(m.Holders))
		for i := range m.Holders {
			b = m.Holders[i].appendWire(b)
		}
	}
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
			if r.PeekNil() {
				m.Holders = nil
				continue
			}
			k := r.ArrayHeader(minEntryBytes)
			m.Holders = make([]HolderEntry, k)
			for i := range m.Holders {
				m.Holders[i].decode(&r)
			}
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
	b = wire.AppendString(b, "ID")
	b = wire.AppendString(b, m.ID)
	b = wire.AppendString(b, "Name")
	b = wire.AppendString(b, m.Name)
	b = wire.AppendString(b, "PieceSize")
	b = wire.AppendInt(b, m.PieceSize)
	b = wire.AppendString(b, "Size")
	return wire.AppendInt(b, m.Size)
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
	b = wire.AppendMapHeader(b, count(8, m.Forwarded, len(m.Priv) > 0))
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
	b = wire.AppendMapHeader(b, count(1, m.Forwarded, len(m.Credits) > 0))
	if len(m.Credits) > 0 {
		b = wire.AppendString(b, "Credits")
		b = wire.AppendArrayHeader(b, len(m.Credits))
		for i := range m.Credits {
			b = m.Credits[i].AppendWire(b)
		}
	}
	b = wire.AppendString(b, "Entries")
	if m.Entries == nil {
		b = wire.AppendNil(b)
	} else {
		b = wire.AppendArrayHeader(b, len(m.Entries))
		for i := range m.Entries {
			e := &m.Entries[i]
			b = wire.AppendMapHeader(b, 3)
			b = wire.AppendString(b, "IP")
			b = wire.AppendBytes(b, e.IP[:])
			b = wire.AppendString(b, "InfoHash")
			b = wire.AppendBytes(b, e.InfoHash[:])
			b = wire.AppendString(b, "Peer")
			b = wire.AppendBytes(b, e.Peer[:])
		}
	}
	return appendForwarded(b, m.Forwarded)
}

// DecodeWire implements wire.Decoder.
func (m *TrackerRenewRequest) DecodeWire(b []byte) error {
	r := wire.NewReader(b)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Credits":
			if r.PeekNil() {
				m.Credits = nil
				continue
			}
			k := r.ArrayHeader(minEntryBytes)
			m.Credits = make([]TrackerAnnounceRequest, k)
			for i := range m.Credits {
				m.Credits[i].decode(&r)
			}
		case "Entries":
			if r.PeekNil() {
				m.Entries = nil
				continue
			}
			k := r.ArrayHeader(minEntryBytes)
			m.Entries = make([]SwarmRef, k)
			for i := range m.Entries {
				e := &m.Entries[i]
				for f := r.MapHeader(); f > 0 && r.Err() == nil; f-- {
					switch string(r.RawString()) {
					case "IP":
						r.Array(e.IP[:])
					case "InfoHash":
						r.Array(e.InfoHash[:])
					case "Peer":
						r.Array(e.Peer[:])
					default:
						r.Fail()
					}
				}
			}
		case "Forwarded":
			m.Forwarded = r.Bool()
		default:
			r.Fail()
		}
	}
	return finish(m, &r)
}
