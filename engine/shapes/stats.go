package shapes

// Count is the number of shapes the manager serves.
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byHandle)
}
