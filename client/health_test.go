package client

import (
	"errors"
	"strings"
	"testing"
)

// A cluster is healthy only when every master is ready and a voter under
// one leader; each way of falling short is named.
func TestHealthProblems(t *testing.T) {
	members := []Member{{ID: "m1", Suffrage: Voter}, {ID: "m2", Suffrage: Voter}}
	ok := func() []Status {
		return []Status{
			{ID: "m1", LeaderID: "m1", Ready: true, Members: members},
			{ID: "m2", LeaderID: "m1", Ready: true, Members: members},
		}
	}
	names := []string{"a1", "a2"}
	for _, tc := range []struct {
		name  string
		edit  func(sts []Status, errs []error)
		wants string // a substring of the problems; "" means healthy
	}{
		{"healthy", func([]Status, []error) {}, ""},
		{"one does not answer", func(_ []Status, errs []error) { errs[1] = errors.New("refused") }, "a2 does not answer: refused"},
		{"no leader", func(sts []Status, _ []error) { sts[1].LeaderID = "" }, "a2 knows no leader"},
		{"two leaders", func(sts []Status, _ []error) { sts[1].LeaderID = "m2" }, "disagree on the leader (m1, m2)"},
		{"not ready", func(sts []Status, _ []error) { sts[1].Ready = false }, "a2 is not ready"},
		{"leader not asked", func(sts []Status, _ []error) { sts[0].LeaderID, sts[1].LeaderID = "m9", "m9" }, "leader m9 is not one of the masters"},
		{"a ready nonvoter", func(sts []Status, _ []error) {
			sts[0].Members = []Member{{ID: "m1", Suffrage: Voter}, {ID: "m2", Suffrage: Nonvoter}}
		}, "a2 is a Nonvoter, not yet a voter"},
		{"removed from the configuration", func(sts []Status, _ []error) { sts[0].Members = members[:1] }, "a2 is not in leader m1's configuration"},
		{"a member not asked", func(sts []Status, _ []error) {
			sts[0].Members = append(members, Member{ID: "m3", Addr: "h:3", Suffrage: Voter})
		}, "member m3 (h:3) was not asked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sts, errs := ok(), make([]error, 2)
			tc.edit(sts, errs)
			got := strings.Join(HealthProblems(names, sts, errs), "; ")
			if tc.wants == "" && got != "" || !strings.Contains(got, tc.wants) {
				t.Fatalf("got problems %q, want %q", got, tc.wants)
			}
		})
	}
}
