// Package actors holds Courier's grains: the User grain (a device's inbox,
// its sequence counter, attached sessions and the dedupe window), the Group
// grain (membership, group_seq, the group log's fan-out and receipts) and the
// pieces grains share (sequence-block leasing, async store calls). Grains
// are plain Proto.Actor actors placed and passivated by package cluster;
// they never touch sockets, and they reach storage only through
// persistence.Store.
package actors
