package filter_test

import (
	"errors"
	"fmt"

	"github.com/linkgate/linkgate/paging/filter"
	"github.com/linkgate/linkgate/upstream"
)

func ExampleCompile() {
	s := upstream.MustSchema(upstream.AllBacklinks)
	e, err := filter.Compile(`(is_content OR is_text) AND url_from !~ "\\?(ref|utm_source)="`, s)
	if err != nil {
		panic(err)
	}
	where, _ := upstream.MarshalWhere(e)
	fmt.Println(string(where))
	// Output:
	// {"and":[{"or":[{"field":"is_content","is":["eq",true]},{"field":"is_text","is":["eq",true]}]},{"not":{"field":"url_from","is":["regex","\\?(ref|utm_source)="]}}]}
}

func ExampleError() {
	s := upstream.MustSchema(upstream.AllBacklinks)
	_, err := filter.Compile("is_dofollow AND\n    anchor = \"seo", s)
	var fe *filter.Error
	if errors.As(err, &fe) {
		fmt.Println(fe)
		fmt.Println(fe.Excerpt())
	}
	// Output:
	// filter: line 2, column 14: unterminated string: " opened here is never closed
	//     anchor = "seo
	//              ^
}
