package diag

import "strings"

// Suggest returns the known word closest to s when it is close enough to be
// a likely typo: equal but for case, or at most two edits away and fewer
// edits than half its length. It returns "" otherwise.
func Suggest(s string, known []string) string {
	best, bestDist := "", min(3, len(s)/2+1)
	for i, k := range known {
		if i == maxSuggest {
			break
		}
		if strings.EqualFold(s, k) {
			return k
		}
		if abs(len(s)-len(k)) >= bestDist {
			continue // the distance is at least the difference in length
		}
		if d := distance(s, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// maxSuggest bounds the known words Suggest compares, to keep the cost of
// errors in very large specs low.
const maxSuggest = 1000

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// distance is the Levenshtein distance between a and b, bounded to keep
// long inputs cheap.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
