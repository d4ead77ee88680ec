package proccluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"fileshare/client"
)

// httpStatus fetches http://addr/v1/status with hc.
func httpStatus(ctx context.Context, hc *http.Client, id, addr string) (client.Status, error) {
	var st client.Status
	if addr == "" {
		return st, fmt.Errorf("%s has no HTTP address (Spec.HTTP) to ask for its status", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s /v1/status: HTTP %d", id, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("%s /v1/status: %w", id, err)
	}
	return st, nil
}
