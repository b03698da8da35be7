package rules

// Readers see keys, not rows: to find the revision that guards a key they
// must recover the placeholder values the key was rendered from. A value
// may contain the literal text that follows its placeholder, so one key can
// have several readings; a reader that cannot tell which row produced the
// key has to guard it with the revision of every reading.

// Match reports whether the template can render key, and with which
// placeholder values (by column). When several readings fit, Match returns
// the one whose first placeholders take the shortest values; MatchAll
// returns every reading.
func (t *Template) Match(key string) (map[string]string, bool) {
	all, _ := t.MatchAll(key, 1)
	if len(all) == 0 {
		return nil, false
	}
	return all[0], true
}

// Matches reports whether the template can render key, with any values.
func (t *Template) Matches(key string) bool {
	all, _ := t.MatchAll(key, 1)
	return len(all) > 0
}

// MatchAll returns every assignment of placeholder values under which the
// template renders key, at most limit of them (limit <= 0: all). complete
// is false when more readings exist than were returned. A placeholder that
// appears twice must take the same value both times.
func (t *Template) MatchAll(key string, limit int) (readings []map[string]string, complete bool) {
	if len(key) < len(t.parts[0]) || key[:len(t.parts[0])] != t.parts[0] {
		return nil, true
	}
	m := matcher{t: t, key: key, limit: limit, vals: make([]string, len(t.columns))}
	// tail[i] is the literal length that must still follow placeholder i.
	m.tail = make([]int, len(t.columns)+1)
	for i := len(t.columns) - 1; i >= 0; i-- {
		m.tail[i] = m.tail[i+1] + len(t.parts[i+1])
	}
	if len(t.columns) == 0 {
		if key == t.parts[0] {
			return []map[string]string{{}}, true
		}
		return nil, true
	}
	m.next(0, len(t.parts[0]))
	return m.out, !m.more
}

type matcher struct {
	t     *Template
	key   string
	limit int
	tail  []int
	vals  []string
	out   []map[string]string
	more  bool // a reading beyond limit exists
}

// next assigns placeholder i a value starting at pos and recurses; it
// returns false once the limit is passed.
func (m *matcher) next(i, pos int) bool {
	t, key := m.t, m.key
	lit := t.parts[i+1]
	last := i == len(t.columns)-1
	for end := pos; end+m.tail[i] <= len(key); end++ {
		if last {
			end = len(key) - len(lit)
		}
		if key[end:end+len(lit)] != lit {
			if last {
				return true
			}
			continue
		}
		v := key[pos:end]
		if !m.consistent(i, v) {
			if last {
				return true
			}
			continue
		}
		m.vals[i] = v
		if last {
			return m.emit()
		}
		if !m.next(i+1, end+len(lit)) {
			return false
		}
	}
	return true
}

// consistent reports whether v agrees with an earlier placeholder of the
// same column.
func (m *matcher) consistent(i int, v string) bool {
	for j := 0; j < i; j++ {
		if m.t.columns[j] == m.t.columns[i] && m.vals[j] != v {
			return false
		}
	}
	return true
}

func (m *matcher) emit() bool {
	if m.limit > 0 && len(m.out) == m.limit {
		m.more = true
		return false
	}
	r := make(map[string]string, len(m.vals))
	for j, c := range m.t.columns {
		r[c] = m.vals[j]
	}
	m.out = append(m.out, r)
	return true
}

// RenderValues returns the key for placeholder values given by column, and
// false when a column the template names has no value.
func (t *Template) RenderValues(values map[string]string) (string, bool) {
	vals := make([][]byte, len(t.columns))
	for i, c := range t.columns {
		v, ok := values[c]
		if !ok {
			return "", false
		}
		vals[i] = []byte(v)
	}
	return string(t.Render(nil, vals)), true
}
