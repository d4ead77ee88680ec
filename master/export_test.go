package master

// DeadMasters returns the members m, while it leads, has not reached for
// Config.DeadMasterTimeout: those that dead-master cleanup would remove
// (within the minimum quorum). It is empty on a follower. Tests only.
func DeadMasters(m *Master) map[string]bool {
	if d := m.pilot.Load(); d != nil {
		return d.dead()
	}
	return map[string]bool{}
}
