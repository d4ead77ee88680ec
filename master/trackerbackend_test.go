package master_test

import (
	"testing"

	"fileshare/master/mastertest"
	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

// The master keeps the tracker.Backend contract the in-memory backend
// keeps: the front-ends cannot tell them apart.
func TestMasterBackendConforms(t *testing.T) {
	c := mastertest.New(t, 1, mastertest.Options{})
	leader := c.Leader()
	trackertest.TestBackend(t, func(*testing.T) tracker.Backend { return c.Master(leader).TrackerBackend() })
}
