package client

import "fileshare/transport/wire"

// Hand-written codecs for the hot messages: registration, heartbeats,
// lookups and the tracker relay. They write exactly the bytes the
// reflective codec writes (fields by name, embedded structs flattened,
// `omitempty` fields left out when zero), so masters with and without
// them interoperate; TestWireMatchesReflective holds them to it.
//
// Each message lists its fields once, in its wireFields method, in the
// reflective codec's order (see wire.Fields); its encoder and its decoder
// both run that list. Decoding falls back to the reflective codec on
// anything unusual (see package wire), so a field added to one of these
// types must be added to its list too or it is dropped on the fast path:
// TestWireCoversEveryField catches that.

// minEntryBytes is less than the encoding of any FileEntry, HolderEntry,
// SwarmRef or TrackerAnnounceRequest takes (their keys alone take more),
// so an array count is checked against the bytes that remain before
// anything is allocated: a frame cannot make the fast path allocate more
// than a few times its size.
const minEntryBytes = 16

// AppendWire implements wire.Encoder.
func (m *RegisterRequest) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*RegisterRequest).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *RegisterRequest) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*RegisterRequest).wireFields)
}

func (m *RegisterRequest) wireFields(f wire.Fields) wire.Fields {
	wire.List(&f, "Files", &m.Files, minEntryBytes, (*FileEntry).wireFields)
	return m.WriteHeader.wireFields(f) // all sort after Files
}

func (m *WriteHeader) wireFields(f wire.Fields) wire.Fields {
	f.OmitBool("Forwarded", &m.Forwarded)
	f.Bytes("Key", &m.Key)
	f.String("PeerID", &m.PeerID)
	f.Uint64("RequestID", &m.RequestID)
	return f
}

// AppendWire implements wire.Encoder.
func (m *FileEntry) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*FileEntry).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *FileEntry) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*FileEntry).wireFields)
}

func (m *FileEntry) wireFields(f wire.Fields) wire.Fields {
	f.String("ID", &m.ID)
	f.String("Name", &m.Name)
	f.Int64("PieceSize", &m.PieceSize)
	f.Int64("Size", &m.Size)
	return f
}

// AppendWire implements wire.Encoder.
func (m *WriteReply) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*WriteReply).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *WriteReply) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*WriteReply).wireFields)
}

func (m *WriteReply) wireFields(f wire.Fields) wire.Fields {
	f.Bool("Duplicate", &m.Duplicate)
	f.Uint64("Index", &m.Index)
	f.OmitString("Leader", &m.Leader)
	return f
}

// AppendWire implements wire.Encoder.
func (m *HeartbeatRequest) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*HeartbeatRequest).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *HeartbeatRequest) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*HeartbeatRequest).wireFields)
}

func (m *HeartbeatRequest) wireFields(f wire.Fields) wire.Fields {
	f.OmitBool("Forwarded", &m.Forwarded)
	f.Bytes("Key", &m.Key)
	f.String("PeerID", &m.PeerID)
	return f
}

// AppendWire implements wire.Encoder.
func (m *HeartbeatReply) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*HeartbeatReply).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *HeartbeatReply) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*HeartbeatReply).wireFields)
}

func (m *HeartbeatReply) wireFields(f wire.Fields) wire.Fields {
	f.OmitString("Leader", &m.Leader)
	f.Int64("LeaseMillis", &m.LeaseMillis)
	return f
}

// AppendWire implements wire.Encoder.
func (m *LookupRequest) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*LookupRequest).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *LookupRequest) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*LookupRequest).wireFields)
}

func (m *LookupRequest) wireFields(f wire.Fields) wire.Fields {
	f.String("FileID", &m.FileID)
	f.OmitBool("Forwarded", &m.Forwarded)
	f.String("Level", (*string)(&m.Level))
	return f
}

// AppendWire implements wire.Encoder.
func (m *LookupReply) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*LookupReply).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *LookupReply) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*LookupReply).wireFields)
}

func (m *LookupReply) wireFields(f wire.Fields) wire.Fields {
	wire.Struct(&f, "File", &m.File, (*FileSummary).wireFields)
	f.Bool("Found", &m.Found)
	wire.List(&f, "Holders", &m.Holders, minEntryBytes, (*HolderEntry).wireFields)
	f.Uint64("Index", &m.Index)
	f.OmitString("Leader", &m.Leader)
	return f
}

func (m *FileSummary) wireFields(f wire.Fields) wire.Fields {
	f.Int("Holders", &m.Holders)
	return m.FileEntry.wireFields(f) // all sort after Holders
}

func (m *HolderEntry) wireFields(f wire.Fields) wire.Fields {
	f.String("Addr", &m.Addr)
	f.String("Name", &m.Name)
	f.String("PeerID", &m.PeerID)
	return f
}

// AppendWire implements wire.Encoder.
func (m *TrackerAnnounceRequest) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*TrackerAnnounceRequest).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *TrackerAnnounceRequest) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*TrackerAnnounceRequest).wireFields)
}

func (m *TrackerAnnounceRequest) wireFields(f wire.Fields) wire.Fields {
	f.Uint8("Event", &m.Event)
	f.OmitBool("Forwarded", &m.Forwarded)
	f.Bool("HasKey", &m.HasKey)
	f.Array("IP", m.IP[:])
	f.Array("InfoHash", m.InfoHash[:])
	f.Uint32("Key", &m.Key)
	f.Array("Peer", m.Peer[:])
	f.Uint16("Port", &m.Port)
	f.OmitBytes("Priv", &m.Priv)
	f.Bool("Seeder", &m.Seeder)
	return f
}

// AppendWire implements wire.Encoder.
func (m *TrackerRenewRequest) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*TrackerRenewRequest).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *TrackerRenewRequest) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*TrackerRenewRequest).wireFields)
}

func (m *TrackerRenewRequest) wireFields(f wire.Fields) wire.Fields {
	wire.OmitList(&f, "Credits", &m.Credits, minEntryBytes, (*TrackerAnnounceRequest).wireFields)
	wire.List(&f, "Entries", &m.Entries, minEntryBytes, (*SwarmRef).wireFields)
	f.OmitBool("Forwarded", &m.Forwarded)
	return f
}

func (m *SwarmRef) wireFields(f wire.Fields) wire.Fields {
	f.Array("IP", m.IP[:])
	f.Array("InfoHash", m.InfoHash[:])
	f.Array("Peer", m.Peer[:])
	return f
}
