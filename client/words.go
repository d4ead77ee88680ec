package client

// methodWords names each API method in the words of the person who made
// the request, for error texts: the method names are the wire's, not the
// user's.
var methodWords = map[string]string{
	MethodPeerJoin:       "the peer's join",
	MethodPeerLeave:      "the peer's leave",
	MethodRegister:       "the registration",
	MethodUnregister:     "the unregistration",
	MethodHeartbeat:      "the heartbeat",
	MethodLookup:         "the lookup",
	MethodSearch:         "the search",
	MethodPeers:          "the peer listing",
	MethodFind:           "the ID-prefix lookup",
	MethodStatus:         "the status request",
	MethodMemberJoin:     "adding the member",
	MethodMemberRemove:   "removing the member",
	MethodTransferLeader: "the leadership transfer",
	MethodSnapshot:       "the snapshot",
	MethodBackupOpen:     "starting the backup",
	MethodBackupRead:     "reading the backup",
	MethodBackupClose:    "ending the backup",

	MethodTrackerAnnounce:      "the relayed announce",
	MethodTrackerAnnounceBatch: "the relayed announces",
	MethodTrackerRenew:         "the relayed re-announces",
	MethodTrackerPolicy:        "the tracker policy change",
	MethodTrackerList:          "the tracker policy listing",
	MethodTrackerUser:          "the tracker member change",
	MethodTrackerUsers:         "the tracker member listing",
	MethodTrackerBooks:         "the member's books",
	MethodTrackerTorrent:       "the torrent factor change",
	MethodTrackerClients:       "the client list change",
	MethodTrackerLedger:        "the ledger read",
}

// Describe names method in words ("the registration"), or "the request"
// for a method it does not know. Errors that reach people use it instead
// of the method's wire name.
func Describe(method string) string {
	if w, ok := methodWords[method]; ok {
		return w
	}
	return "the request"
}
