package httpapi

// parked counts the live requests waiting in the lot.
func (l *parkingLot) parked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, waiting := range l.shapes {
		n += len(waiting)
	}
	return n
}
