package ahrefssim

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSONString appends s as a JSON string. Generated strings are plain
// ASCII and take the fast path; anything else (a target name can carry
// arbitrary bytes into url_to) goes through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendVal(b []byte, v val) []byte {
	switch v.k {
	case vStr:
		return appendJSONString(b, v.s)
	case vInt:
		return strconv.AppendInt(b, v.n, 10)
	case vFloat:
		return strconv.AppendFloat(b, v.f, 'f', -1, 64)
	case vBool:
		return strconv.AppendBool(b, v.n != 0)
	case vTime:
		b = append(b, '"')
		b = time.Unix(v.n, 0).UTC().AppendFormat(b, time.RFC3339)
		return append(b, '"')
	case vDate:
		b = append(b, '"')
		b = time.Unix(v.n, 0).UTC().AppendFormat(b, time.DateOnly)
		return append(b, '"')
	case vStrs:
		b = append(b, '[')
		for k, s := range v.ss {
			if k > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		return append(b, ']')
	case vInts:
		b = append(b, '[')
		for k, n := range v.ns {
			if k > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, n, 10)
		}
		return append(b, ']')
	}
	return append(b, "null"...)
}
