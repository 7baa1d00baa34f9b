package embedded

// RawGroupCounts counts the group log and group dedupe keys physically
// present, expired or not.
func (s *Store) RawGroupCounts() (log, dedupe int, err error) {
	c, err := s.rawCounts(prefixGroupLog, prefixGroupDedupe)
	if err != nil {
		return 0, 0, err
	}
	return c[0], c[1], nil
}
