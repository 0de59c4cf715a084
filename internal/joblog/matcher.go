package joblog

// The matcher is an Aho–Corasick automaton compiled to a table-driven DFA, so
// that scanning costs one table load per input byte whatever the number of
// patterns.
//
// Bytes are first mapped to classes: every byte that occurs in some pattern
// gets a class of its own and all the others share class 0, which keeps rows
// short (a handful of secrets use perhaps 80 distinct bytes, not 256).
//
// States are numbered in breadth-first order, so a state's failure link always
// has a smaller number than the state itself. The first denseN states — the
// shallow ones, where a scan spends nearly all its time — get a full row of
// transitions. When the patterns are long (a private key as a secret has
// thousands of states), the deeper states beyond the table budget keep only
// their trie edges and fall back along failure links until they reach a dense
// state. That bounds the table at denseBudget entries whatever the secrets.
//
// A transition entry is the target's row offset (id·nclass) for dense targets
// or denseLimit+(id−denseN) for sparse ones, with matchFlag set when some
// pattern ends in the target state. The scan loop therefore needs neither a
// multiplication nor a second lookup for the common no-match case.
//
// For redaction the automaton answers two questions per state: the longest
// pattern that ends here (matchLen, to redact the union of overlapping
// matches) and how many trailing bytes could still begin a match (hold: the
// depth of the deepest state on the failure chain that has children). Bytes
// before that point can be released; nothing later can make them part of a
// match.

import (
	"slices"
)

const (
	matchFlag = 1 << 31
	// defaultDenseBudget is the most transition-table entries (4 bytes each)
	// a matcher allocates: 1 MiB.
	defaultDenseBudget = 1 << 18
)

type edge struct {
	class uint8
	to    uint32 // encoded target, with matchFlag
}

type matcher struct {
	class      [256]uint8
	nclass     uint32
	trans      []uint32 // dense rows, denseN × nclass encoded entries
	denseN     uint32
	denseLimit uint32 // denseN × nclass: encoded values below it are dense row offsets

	// Per state, indexed by state id.
	fail     []uint32
	matchLen []int32
	hold     []int32
	// Sparse states' trie edges: edges[edgeAt[id-denseN]:edgeAt[id-denseN+1]].
	edgeAt []uint32
	edges  []edge

	maxLen int // longest pattern
}

// trieNode is a node of the trie built before compilation.
type trieNode struct {
	next  []trieEdge // sorted by byte
	depth int32
	term  bool
}

type trieEdge struct {
	b  byte
	to int32
}

func (n *trieNode) child(b byte) (int32, bool) {
	i, ok := slices.BinarySearchFunc(n.next, b, func(e trieEdge, b byte) int { return int(e.b) - int(b) })
	if !ok {
		return 0, false
	}
	return n.next[i].to, true
}

// newMatcher compiles patterns (non-empty, duplicates allowed) into a matcher
// whose dense table holds at most denseBudget entries. It returns nil when
// there are no patterns.
func newMatcher(patterns []string, denseBudget int) *matcher {
	nodes := []trieNode{{}}
	maxLen := 0
	for _, p := range patterns {
		if p == "" {
			continue
		}
		maxLen = max(maxLen, len(p))
		cur := int32(0)
		for i := 0; i < len(p); i++ {
			b := p[i]
			n := &nodes[cur]
			j, ok := slices.BinarySearchFunc(n.next, b, func(e trieEdge, b byte) int { return int(e.b) - int(b) })
			if ok {
				cur = n.next[j].to
				continue
			}
			id := int32(len(nodes))
			n.next = slices.Insert(n.next, j, trieEdge{b, id})
			nodes = append(nodes, trieNode{depth: nodes[cur].depth + 1})
			cur = id
		}
		nodes[cur].term = true
	}
	if maxLen == 0 {
		return nil
	}

	// Renumber breadth-first: order[newID] = oldID.
	order := make([]int32, 0, len(nodes))
	order = append(order, 0)
	for i := 0; i < len(order); i++ {
		for _, e := range nodes[order[i]].next {
			order = append(order, e.to)
		}
	}
	newID := make([]uint32, len(nodes))
	for id, old := range order {
		newID[old] = uint32(id)
	}

	m := &matcher{maxLen: maxLen}
	var seen [256]bool
	for _, p := range patterns {
		for i := 0; i < len(p); i++ {
			seen[p[i]] = true
		}
	}
	classByte := []byte{0} // classByte[c] is the byte of class c ≥ 1
	for b := range 256 {
		if seen[b] {
			m.class[b] = uint8(len(classByte))
			classByte = append(classByte, byte(b))
		}
	}
	m.nclass = uint32(len(classByte))

	n := uint32(len(nodes))
	m.denseN = n
	if budget := uint32(max(denseBudget, int(m.nclass))); n*m.nclass > budget {
		m.denseN = budget / m.nclass
	}
	m.denseLimit = m.denseN * m.nclass

	// Failure links, match lengths and hold-back depths, in BFS order so that
	// every state's failure target is complete before the state itself.
	m.fail = make([]uint32, n)
	m.matchLen = make([]int32, n)
	m.hold = make([]int32, n)
	for id := uint32(0); id < n; id++ {
		node := &nodes[order[id]]
		if id != 0 {
			f := m.fail[id]
			if node.term {
				m.matchLen[id] = node.depth
			} else {
				m.matchLen[id] = m.matchLen[f]
			}
			if len(node.next) > 0 {
				m.hold[id] = node.depth
			} else {
				m.hold[id] = m.hold[f]
			}
		}
		for _, e := range node.next {
			c := newID[e.to]
			if id == 0 {
				m.fail[c] = 0
				continue
			}
			// The failure target of child c by byte b: follow this state's
			// failure chain to the first state with a b edge.
			f := m.fail[id]
			for {
				if t, ok := nodes[order[f]].child(e.b); ok {
					m.fail[c] = newID[t]
					break
				}
				if f == 0 {
					m.fail[c] = 0
					break
				}
				f = m.fail[f]
			}
		}
	}

	enc := func(id uint32) uint32 {
		var v uint32
		if id < m.denseN {
			v = id * m.nclass
		} else {
			v = m.denseLimit + (id - m.denseN)
		}
		if m.matchLen[id] > 0 {
			v |= matchFlag
		}
		return v
	}

	m.trans = make([]uint32, m.denseLimit)
	for id := uint32(0); id < m.denseN; id++ {
		node := &nodes[order[id]]
		row := m.trans[id*m.nclass : (id+1)*m.nclass]
		for c := uint32(0); c < m.nclass; c++ {
			if c != 0 {
				if t, ok := node.child(classByte[c]); ok {
					row[c] = enc(newID[t])
					continue
				}
			}
			if id == 0 {
				row[c] = enc(0)
			} else {
				row[c] = m.trans[m.fail[id]*m.nclass+c] // the failure target is dense and done
			}
		}
	}
	m.edgeAt = make([]uint32, 0, n-m.denseN+1)
	for id := m.denseN; id < n; id++ {
		m.edgeAt = append(m.edgeAt, uint32(len(m.edges)))
		for _, e := range nodes[order[id]].next {
			m.edges = append(m.edges, edge{class: m.class[e.b], to: enc(newID[e.to])})
		}
	}
	m.edgeAt = append(m.edgeAt, uint32(len(m.edges)))
	return m
}

// id decodes an encoded state (without matchFlag) to its state id.
func (m *matcher) id(v uint32) uint32 {
	if v < m.denseLimit {
		return v / m.nclass
	}
	return v - m.denseLimit + m.denseN
}

// slowStep is the transition from a sparse state v by byte b.
func (m *matcher) slowStep(v uint32, b byte) uint32 {
	c := m.class[b]
	id := m.id(v)
	for id >= m.denseN {
		k := id - m.denseN
		for _, e := range m.edges[m.edgeAt[k]:m.edgeAt[k+1]] {
			if e.class == c {
				return e.to
			}
		}
		id = m.fail[id]
	}
	return m.trans[id*m.nclass+uint32(c)]
}

// found is a match reported by scan: the offset just past its last byte,
// and the state the automaton reached there.
type found struct {
	end   int
	state uint32
}

// interleaveMin is the shortest input scanned as four interleaved streams.
const interleaveMin = 1 << 10

// scan runs the automaton over p from state v, appends the matches to fs in
// order of their end, and returns the state after p.
//
// One DFA step is a chain of dependent loads, so a single stream runs at the
// latency of the L1 cache, not at the throughput of the core. When the whole
// automaton is dense and p is long, scan cuts p into four stretches and runs
// them side by side. A stretch other than the first starts from the root
// maxLen bytes early: the automaton's state is the longest suffix of the input
// that is a trie node, at most maxLen bytes long, so after those bytes it is
// in the same state as a scan from the start would be. Matches ending inside
// that warm-up are left to the previous stretch, which scans them for real.
func (m *matcher) scan(p []byte, v uint32, fs []found) (uint32, []found) {
	w := m.maxLen
	if m.denseN != uint32(len(m.fail)) || len(p) < interleaveMin || len(p) < 16*w {
		return m.scanOne(p, 0, v, fs)
	}
	// Stretch j scans l bytes from s[j]; its own part starts at s[j] (j = 0)
	// or s[j]+w, and ends where the next stretch's own part starts.
	l := (len(p) + 3*w) / 4
	s0, s1, s2, s3 := 0, l-w, 2*l-2*w, 3*l-3*w
	p0, p1, p2, p3 := p[s0:s0+l], p[s1:s1+l], p[s2:s2+l], p[s3:s3+l]
	trans, class := m.trans, &m.class
	v1, v2, v3 := uint32(0), uint32(0), uint32(0)
	n0 := len(fs)
	for i := 0; i < len(p0); i++ {
		// The loop body stays free of appends so that the four states,
		// the index and the tables live in registers.
		for ; i < len(p0); i++ {
			e0 := trans[v+uint32(class[p0[i]])]
			e1 := trans[v1+uint32(class[p1[i]])]
			e2 := trans[v2+uint32(class[p2[i]])]
			e3 := trans[v3+uint32(class[p3[i]])]
			if (e0|e1|e2|e3)&matchFlag != 0 {
				v, v1, v2, v3 = e0, e1, e2, e3
				break
			}
			v, v1, v2, v3 = e0, e1, e2, e3
		}
		if i == len(p0) {
			break
		}
		fs = appendFound(fs, i, w, [4]int{s0, s1, s2, s3}, [4]uint32{v, v1, v2, v3})
		v, v1, v2, v3 = v&^matchFlag, v1&^matchFlag, v2&^matchFlag, v3&^matchFlag
	}
	if !slices.IsSortedFunc(fs[n0:], func(a, b found) int { return a.end - b.end }) {
		slices.SortFunc(fs[n0:], func(a, b found) int { return a.end - b.end })
	}
	return m.scanOne(p[s3+l:], s3+l, v3, fs)
}

// scanOne is scan as a single stream; base is p's offset in the reported
// ends.
func (m *matcher) scanOne(p []byte, base int, v uint32, fs []found) (uint32, []found) {
	trans, class, limit := m.trans, &m.class, m.denseLimit
	for i := 0; i < len(p); i++ {
		var e uint32
		if v < limit {
			e = trans[v+uint32(class[p[i]])]
		} else {
			e = m.slowStep(v, p[i])
		}
		v = e &^ matchFlag
		if e&matchFlag != 0 {
			fs = append(fs, found{base + i + 1, v})
		}
	}
	return v, fs
}

// appendFound records the matches of the interleaved scan at index i, where
// e holds the four streams' transition entries.
func appendFound(fs []found, i, w int, start [4]int, e [4]uint32) []found {
	for j := range 4 {
		if e[j]&matchFlag != 0 && (j == 0 || i >= w) {
			fs = append(fs, found{start[j] + i + 1, e[j] &^ matchFlag})
		}
	}
	return fs
}
