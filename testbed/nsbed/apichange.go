package nsbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Change sends a change (POST, PUT, PATCH, DELETE) to the API with the
// bearer token of the appliance's config (api.token), body encoded as JSON
// unless nil, and decodes a JSON answer into out unless out is nil. Any
// status but 2xx is an error carrying the answer.
func (a *Appliance) Change(ctx context.Context, method, path string, body, out any) error {
	req, err := a.NewRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, b, err := a.roundTrip(req)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// Do sends one request to the API as Change does (GETs without the
// token) and returns the status and the answer's body whatever the
// status: for tests that expect a change to be refused, or compare
// answers byte for byte.
func (a *Appliance) Do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	req, err := a.NewRequest(ctx, method, path, body)
	if err != nil {
		return 0, nil, err
	}
	resp, b, err := a.roundTrip(req)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// NewRequest builds the request Do sends, for a caller that sends it on a
// connection of its own (pipelined changes).
func (a *Appliance) NewRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.API+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != http.MethodGet && a.Config.API.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Config.API.Token)
	}
	return req, nil
}
