package scylla

import (
	"fmt"
	"strconv"
	"time"

	"github.com/scylladb/gocqlx/v2/qb"
	"github.com/scylladb/gocqlx/v2/table"

	"github.com/courier-im/courier/persistence"
)

// Table models, matching migrations/. Statements are built from them once
// per store; gocql prepares each on first use and caches it.
var (
	usersTable = table.New(table.Metadata{
		Name:    "users",
		Columns: []string{"user_id", "handle", "created_at"},
		PartKey: []string{"user_id"},
	})
	handlesTable = table.New(table.Metadata{
		Name:    "handles",
		Columns: []string{"handle", "user_id"},
		PartKey: []string{"handle"},
	})
	devicesTable = table.New(table.Metadata{
		Name:    "devices",
		Columns: []string{"user_id", "device_id", "secret_hash", "created_at"},
		PartKey: []string{"user_id"},
		SortKey: []string{"device_id"},
	})
	inboxTable = table.New(table.Metadata{
		Name:    "inbox",
		Columns: []string{"user_id", "device_id", "inbox_seq", "entry"},
		PartKey: []string{"user_id", "device_id"},
		SortKey: []string{"inbox_seq"},
	})
	dedupeTable = table.New(table.Metadata{
		Name:    "dedupe",
		Columns: []string{"recipient_id", "sender_id", "client_msg_id", "stored_at_ms"},
		PartKey: []string{"recipient_id", "sender_id"},
		SortKey: []string{"client_msg_id"},
	})
	sequencesTable = table.New(table.Metadata{
		Name:    "sequences",
		Columns: []string{"name", "last"},
		PartKey: []string{"name"},
	})
	secretsTable = table.New(table.Metadata{
		Name:    "secrets",
		Columns: []string{"name", "value"},
		PartKey: []string{"name"},
	})
	profilesTable = table.New(table.Metadata{
		Name:    "profiles",
		Columns: []string{"user_id", "profile"},
		PartKey: []string{"user_id"},
	})
)

// statements are the CQL strings the store runs, with positional bind
// markers in the order of their columns.
type statements struct {
	insertUser, getUser                   string
	claimHandle, getHandle, unclaimHandle string
	putDevice, getDevice, listDevices     string
	insertEntry, rangeInbox, getMarker    string
	deleteRange, deleteInbox              string
	insertDedupe, getDedupe               string
	getSequence, createSequence, casSeq   string
	insertSecret, getSecret, deleteSecret string
	putProfile, getProfile                string
	deleteDevice                          string
	putDeviceKeys, getDeviceKeys          string
	deleteDeviceKeys                      string
	putPrekey, listPrekeys, takePrekey    string
	countPrekeys, deletePrekeys           string

	// Media (media.go, migrations/0005_media.cql).
	insertBlob, getBlob, forwardBlob, deleteBlob  string
	indexBlob, listDayIndex, unindexBlob          string
	insertMediaDay, listMediaDays, deleteMediaDay string
	insertUsage, sumUsage                         string
}

func buildStatements(ttlSec int) statements {
	var st statements
	st.insertUser, _ = usersTable.Insert()
	st.getUser, _ = usersTable.Get("handle", "created_at")

	// INSERT ... IF NOT EXISTS: the handle's single owner is decided by Paxos.
	st.claimHandle, _ = handlesTable.InsertBuilder().Unique().ToCql()
	st.getHandle, _ = handlesTable.Get("user_id")
	// Undo a claim whose user row could not be written, but only our own.
	st.unclaimHandle, _ = qb.Delete("handles").Where(qb.Eq("handle")).If(qb.Eq("user_id")).ToCql()

	st.putDevice, _ = devicesTable.Insert()
	st.getDevice, _ = devicesTable.Get("secret_hash", "created_at")
	st.listDevices, _ = qb.Select("devices").Columns("device_id", "secret_hash", "created_at").
		Where(qb.Eq("user_id")).ToCql()

	st.insertEntry, _ = inboxTable.InsertBuilder().TTL(ttlDuration(ttlSec)).ToCql()
	st.rangeInbox, _ = qb.Select("inbox").Columns("inbox_seq", "entry").
		Where(qb.Eq("user_id"), qb.Eq("device_id"), qb.Gt("inbox_seq")).
		OrderBy("inbox_seq", qb.ASC).LimitNamed("limit").ToCql()
	st.getMarker, _ = qb.Select("inbox").Columns("entry").
		Where(qb.Eq("user_id"), qb.Eq("device_id"), qb.Eq("inbox_seq")).ToCql()
	// One range tombstone per ack.
	st.deleteRange, _ = qb.Delete("inbox").
		Where(qb.Eq("user_id"), qb.Eq("device_id"), qb.GtNamed("inbox_seq", "after"), qb.LtOrEqNamed("inbox_seq", "through")).ToCql()
	st.deleteInbox, _ = qb.Delete("inbox").Where(qb.Eq("user_id"), qb.Eq("device_id")).ToCql()

	st.insertDedupe, _ = dedupeTable.InsertBuilder().TTL(ttlDuration(ttlSec)).ToCql()
	st.getDedupe, _ = dedupeTable.Get("stored_at_ms")

	st.getSequence, _ = sequencesTable.Get("last")
	st.createSequence, _ = sequencesTable.InsertBuilder().Unique().ToCql()
	st.casSeq, _ = qb.Update("sequences").Set("last").Where(qb.Eq("name")).If(qb.EqNamed("last", "expected")).ToCql()

	st.insertSecret, _ = secretsTable.InsertBuilder().Unique().ToCql()
	st.getSecret, _ = secretsTable.Get("value")
	// A Paxos delete: secrets are written by Paxos, whose timestamps a
	// plain delete need not be above.
	st.deleteSecret, _ = qb.Delete("secrets").Where(qb.Eq("name")).Existing().ToCql()

	st.deleteDevice, _ = qb.Delete("devices").Where(qb.Eq("user_id"), qb.Eq("device_id")).ToCql()

	st.putDeviceKeys = "INSERT INTO device_keys (user_id, device_id, registration_id, identity_key, signed_prekey_id, signed_prekey, signed_prekey_signature) VALUES (?, ?, ?, ?, ?, ?, ?)"
	st.getDeviceKeys = "SELECT registration_id, identity_key, signed_prekey_id, signed_prekey, signed_prekey_signature FROM device_keys WHERE user_id = ? AND device_id = ?"
	st.deleteDeviceKeys = "DELETE FROM device_keys WHERE user_id = ? AND device_id = ?"
	st.putPrekey = "INSERT INTO one_time_prekeys (user_id, device_id, prekey_id, public_key) VALUES (?, ?, ?, ?)"
	st.listPrekeys = "SELECT prekey_id, public_key FROM one_time_prekeys WHERE user_id = ? AND device_id = ? LIMIT " + strconv.Itoa(takeCandidates)
	// The one LWT of the key directory: only the take whose delete applied
	// owns the prekey.
	st.takePrekey = "DELETE FROM one_time_prekeys WHERE user_id = ? AND device_id = ? AND prekey_id = ? IF EXISTS"
	st.countPrekeys = "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ? AND device_id = ?"
	st.deletePrekeys = "DELETE FROM one_time_prekeys WHERE user_id = ? AND device_id = ?"

	st.putProfile, _ = profilesTable.Insert()
	st.getProfile, _ = profilesTable.Get("profile")

	// Every write of a blob record is an LWT, so plain writes never race
	// Paxos-timestamped ones on the same cells.
	st.insertBlob = "INSERT INTO media_blobs (digest, size, owner_id, created_at, last_referenced) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
	st.getBlob = "SELECT size, owner_id, created_at, last_referenced FROM media_blobs WHERE digest = ?"
	st.forwardBlob = "UPDATE media_blobs SET last_referenced = ? WHERE digest = ? IF last_referenced < ?"
	st.deleteBlob = "DELETE FROM media_blobs WHERE digest = ? IF EXISTS"
	st.indexBlob = "INSERT INTO media_by_day (day, shard, last_referenced, digest) VALUES (?, ?, ?, ?)"
	st.listDayIndex = "SELECT last_referenced, digest FROM media_by_day WHERE day = ? AND shard = ? AND last_referenced < ?"
	// Index deletes carry the time the row was read, so they never shadow
	// a row a concurrent reference rewrote after that.
	st.unindexBlob = "DELETE FROM media_by_day USING TIMESTAMP ? WHERE day = ? AND shard = ? AND last_referenced = ? AND digest = ?"
	st.insertMediaDay = "INSERT INTO media_days (bucket, day) VALUES (0, ?)"
	st.listMediaDays = "SELECT day FROM media_days WHERE bucket = 0 AND day <= ?"
	st.deleteMediaDay = "DELETE FROM media_days USING TIMESTAMP ? WHERE bucket = 0 AND day = ?"
	st.insertUsage = fmt.Sprintf("INSERT INTO media_usage (user_id, day, add_id, bytes) VALUES (?, ?, ?, ?) USING TTL %d",
		ttlSeconds(persistence.MediaUsageTTL))
	st.sumUsage = "SELECT SUM(bytes) FROM media_usage WHERE user_id = ? AND day = ?"
	return st
}

func ttlDuration(sec int) time.Duration { return time.Duration(sec) * time.Second }
