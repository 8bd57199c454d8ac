package snapshot

// Open counts the open snapshots: held ones hold a PostgreSQL transaction
// (tables without a primary key); keyed ones are snapshots of keyed tables
// being paged through (one rewind index per snapshot and table, dropped
// when idle).
func (m *Manager) Open() (held, keyed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions), len(m.rewinds)
}
