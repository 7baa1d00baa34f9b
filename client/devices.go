package client

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Multi-device: the primary device (1) approves new devices with one-time
// link codes; a user has at most five devices.

// DeviceInfo is one linked device.
type DeviceInfo struct {
	DeviceID  uint32    `json:"device_id"`
	CreatedAt time.Time `json:"created_at"`
	Primary   bool      `json:"primary"`
}

// CreateLinkCode asks for a one-time code that links one more device to
// this user (primary device only; valid 10 minutes). Show it to the new
// device, which calls Link.
func (c *Client) CreateLinkCode(ctx context.Context) (string, error) {
	var out struct {
		Code string `json:"code"`
	}
	if err := c.api(ctx, http.MethodPost, "/v1/devices/link-code", nil, &out); err != nil {
		return "", fmt.Errorf("create link code: %w", err)
	}
	return out.Code, nil
}

// Link redeems a link code on the new device and returns its credentials
// (like Register, the secret is shown once, and with WithE2EE the new
// device's keys are published before Link returns).
func Link(ctx context.Context, base, code string, opts ...Option) (Credentials, error) {
	creds, err := newDevice(ctx, base, "/v1/devices/link", map[string]string{"code": code}, opts)
	if err != nil {
		return Credentials{}, fmt.Errorf("link device: %w", err)
	}
	if err := publishAtRegistration(ctx, creds, opts); err != nil {
		return creds, fmt.Errorf("linked device %d but could not publish its encryption keys: %w", creds.DeviceID, err)
	}
	return creds, nil
}

// ListDevices returns the user's devices.
func (c *Client) ListDevices(ctx context.Context) ([]DeviceInfo, error) {
	var out []DeviceInfo
	if err := c.api(ctx, http.MethodGet, "/v1/devices", nil, &out); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// UnlinkDevice removes a device (the primary may remove any other; a device
// may remove itself): its inbox and keys are deleted and it is signed out.
func (c *Client) UnlinkDevice(ctx context.Context, deviceID uint32) error {
	if err := c.api(ctx, http.MethodDelete, "/v1/devices/"+strconv.FormatUint(uint64(deviceID), 10), nil, nil); err != nil {
		return fmt.Errorf("unlink device %d: %w", deviceID, err)
	}
	return nil
}
