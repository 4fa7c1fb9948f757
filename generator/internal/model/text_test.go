package model

import "testing"

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"  plain  ":                     "  plain",
		"a\r\nb\rc\u2028d\u2029e\vf\fg": "a\nb\nc\nd\ne\nf\ng",
		"\n\nx\n\n\n\ny\n\n":            "x\n\ny",
		"nul\x00bel\x07esc\x1b":         "nulbelesc",
		"bidi\u202e\u2066x\u2069\u202c": "bidix",
		"zero\u200bwidth\ufeff":         "zerowidth",
		"bad\xffutf8":                   "bad\uFFFDutf8",
		"tab\tkept, Grüße 🎉":            "tab\tkept, Grüße 🎉",
		"*/ /* ` % \"":                  "*/ /* ` % \"",
	} {
		if got := string(CleanText(in)); got != want {
			t.Errorf("CleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckWireName(t *testing.T) {
	for s, ok := range map[string]bool{
		"shop.orders": true, "inventory.stock-reserved": true, "a_b": true, "1x": true,
		"": false, ".x": false, "a b": false, "a*": false, "ü": false, string(make([]byte, 256)): false,
	} {
		if got := checkWireName(s, "._-") == ""; got != ok {
			t.Errorf("checkWireName(%q) ok = %v, want %v", s, got, ok)
		}
	}
}

func TestValidJSONName(t *testing.T) {
	for s, ok := range map[string]bool{
		"order_id": true, "@type": true, "$ref": true, "a.b": true, "Grüße": true,
		"": false, "-": false, "a b": false, "a,b": false, `a"b`: false, `a\b`: false, "a`b": false,
	} {
		if validJSONName(s) != ok {
			t.Errorf("validJSONName(%q) = %v, want %v", s, !ok, ok)
		}
	}
}
