package scylla

import "context"

// DeleteMarker deletes one device's dedupe marker of (senderID,
// clientMsgID), leaving what an Append that failed half way can leave.
func (s *Store) DeleteMarker(ctx context.Context, recipientID string, deviceID uint32, senderID, clientMsgID string) error {
	return s.query(ctx, "DELETE FROM inbox WHERE user_id = ? AND device_id = ? AND inbox_seq = ?",
		recipientID, int64(deviceID), markerSeq(senderID, clientMsgID)).Exec()
}
