package naming

import (
	"go/token"
	"testing"
)

func TestGoName(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"order_id", "OrderID"},
		{"orderId", "OrderID"},
		{"orderID", "OrderID"},
		{"OrderID", "OrderID"},
		{"api_url", "APIURL"},
		{"apiURL", "APIURL"},
		{"APIURL", "APIURL"},
		{"user_ids", "UserIDs"},
		{"urls", "URLs"},
		{"inventory.stock-reserved", "InventoryStockReserved"},
		{"OrderPlaced", "OrderPlaced"},
		{"order.placed", "OrderPlaced"},
		{"HTTPServer", "HTTPServer"},
		{"xmlHttpRequest", "XMLHTTPRequest"},
		{"utf8_text", "UTF8Text"},
		{"v2", "V2"},
		{"order2_id", "Order2ID"},
		{"user.v2.deleted", "UserV2Deleted"},
		{"a", "A"},
		{"ORDER_ID", "ORDERID"},
		{"sku", "Sku"},
		{"@type", "Type"},
		{"_private", "Private"},
		{"ids", "IDs"},
		{"https", "HTTPS"},
		{"bus", "Bus"},
	} {
		got, ok := GoName(tt.in)
		if !ok || got != tt.want {
			t.Errorf("GoName(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestGoNameRejects(t *testing.T) {
	for _, in := range []string{"", "_", "--", "2fa", "123", "ümlaut", "日本", "a\u202eb"} {
		if got, ok := GoName(in); ok {
			t.Errorf("GoName(%q) = %q, want no name", in, got)
		}
	}
}

func TestCamelAllowsLeadingDigits(t *testing.T) {
	for in, want := range map[string]string{"2fa": "2fa", "100%": "100", "in progress": "InProgress", "HTTPS": "HTTPS"} {
		if got, ok := Camel(in); !ok || got != want {
			t.Errorf("Camel(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestIdentifiers(t *testing.T) {
	if !IsKeyword("type") || IsKeyword("Type") {
		t.Error("IsKeyword")
	}
	for _, s := range []string{"string", "error", "any", "nil", "len", "iota", "comparable"} {
		if !IsPredeclared(s) {
			t.Errorf("IsPredeclared(%q) = false", s)
		}
	}
	for s, want := range map[string]bool{"Foo": true, "Foo_2": true, "foo": false, "": false, "Foo Bar": false, "Ünlaut": false} {
		if IsExported(s) != want {
			t.Errorf("IsExported(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"shopevents": true, "v2": true, "Shop": false, "shop_events": false, "2x": false, "type": false, "": false} {
		if IsPackageName(s) != want {
			t.Errorf("IsPackageName(%q) = %v", s, !want)
		}
	}
}

// FuzzGoName checks that every derived name is an exported identifier, that
// no input panics, and that deriving again changes nothing.
func FuzzGoName(f *testing.F) {
	for _, s := range []string{"order_id", "inventory.stock-reserved", "APIURL", "HTTPServer", "user_ids", "2fa", "ü", "a__b", "IDs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, ok := GoName(s)
		if !ok {
			return
		}
		if !token.IsIdentifier(name) || !token.IsExported(name) || !IsExported(name) {
			t.Fatalf("GoName(%q) = %q, not an exported identifier", s, name)
		}
		if again, ok := GoName(name); !ok || again != name {
			t.Fatalf("GoName(GoName(%q)) = %q, want %q", s, again, name)
		}
	})
}
