package upstream

import "testing"

func TestIsFree(t *testing.T) {
	for target, want := range map[string]bool{
		"ahrefs.com": true, "AHREFS.com": true, "https://ahrefs.com/blog/x": true, "blog.ahrefs.com": true,
		"yep.com/": true, "http://firehose.com:443/a": true, " ahrefs.com. ": true,
		"notahrefs.com": false, "ahrefs.com.evil.example": false, "example.com/ahrefs.com": false, "": false,
	} {
		if got := IsFree(target); got != want {
			t.Errorf("IsFree(%q) = %v, want %v", target, got, want)
		}
	}
}

func TestKnownRowCap(t *testing.T) {
	c := KnownRowCap(FreeRows)
	if c.Cap() != FreeRows {
		t.Fatalf("Cap = %d, want %d", c.Cap(), FreeRows)
	}
	// Requests are asked at most the cap once it is known.
	if c.Served(FreeRows, FreeRows) {
		t.Error("a full page at the known cap was taken for one the cap may have cut short")
	}
	if c.Served(FreeRows, 40) {
		t.Error("a page below the known cap was not the end of the data")
	}
}
