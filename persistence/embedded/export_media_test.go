package embedded

// RawMediaCounts counts the blob, blob index and media usage keys
// physically present, expired or not.
func (s *Store) RawMediaCounts() (blobs, index, usage int, err error) {
	c, err := s.rawCounts(prefixBlob, prefixBlobByRef, prefixMediaUsage)
	if err != nil {
		return 0, 0, 0, err
	}
	return c[0], c[1], c[2], nil
}
