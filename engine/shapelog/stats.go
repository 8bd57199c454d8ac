package shapelog

// DiskUsage is the size of the log's files on disk, in bytes.
func (s *Store) DiskUsage() uint64 { return s.db.Metrics().DiskSpaceUsage() }
