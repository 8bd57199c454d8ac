package httpapi

// parked counts the live requests waiting in the lot.
func (l *parkingLot) parked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return countAll(l.shapes)
}

// countAll counts the entries of a map of sets.
func countAll[K comparable, V comparable](m map[K]map[V]struct{}) int {
	n := 0
	for _, set := range m {
		n += len(set)
	}
	return n
}
