//! `limit` and `continue` of a list, as the API server pages (kubectl asks `limit=500` and
//! follows `continue` tokens; clients page big lists with smaller limits).
//!
//! The token is opaque to clients: base64url of `{"v":1,"start":"<ns>/<name>"}`, the key
//! after which the next page starts. The API server's token also pins the list's
//! resourceVersion and answers 410 once that version is compacted; this server keeps no
//! history, so a next page is read from the objects of now (what the API server serves with
//! `resourceVersionMatch=NotOlderThan` semantics) and a token never expires.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize)]
struct Token {
    v: u32,
    start: String,
}

/// One page of a sorted list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// The token of the next page, when there is one.
    pub next: Option<String>,
    /// How many objects follow this page.
    pub remaining: Option<usize>,
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Cuts `items` (sorted by namespace, then name) to the page `limit` and `cont` ask for.
/// The error is the API server's message for a bad parameter.
pub fn page(items: Vec<Value>, limit: Option<&str>, cont: Option<&str>) -> Result<Page, String> {
    let limit = match limit.filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| format!("invalid limit {l:?}: not an integer"))?
            .max(0) as usize,
    };
    let mut items = items;
    if let Some(c) = cont.filter(|c| !c.is_empty()) {
        let bad = |why: &str| format!("continue key is not valid: {why}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .map_err(|_| bad("not base64"))?;
        let t: Token =
            serde_json::from_slice(&raw).map_err(|_| bad("not a token of this server"))?;
        if t.v != 1 {
            return Err(bad("unknown version"));
        }
        items.retain(|o| key(o) > t.start);
    }
    if limit == 0 || items.len() <= limit {
        return Ok(Page {
            items,
            next: None,
            remaining: None,
        });
    }
    let rest = items.split_off(limit);
    let start = items.last().map(key).unwrap_or_default();
    let token = serde_json::to_vec(&Token { v: 1, start }).unwrap_or_default();
    Ok(Page {
        items,
        next: Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)),
        remaining: Some(rest.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objs(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"metadata": {"namespace": "default", "name": format!("p{i:02}")}}))
            .collect()
    }

    fn names(p: &Page) -> Vec<&str> {
        p.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn pages_follow_each_other_to_the_end() {
        let p1 = page(objs(5), Some("2"), None).unwrap();
        assert_eq!(names(&p1), ["p00", "p01"]);
        assert_eq!(p1.remaining, Some(3));
        let p2 = page(objs(5), Some("2"), p1.next.as_deref()).unwrap();
        assert_eq!(names(&p2), ["p02", "p03"]);
        let p3 = page(objs(5), Some("2"), p2.next.as_deref()).unwrap();
        assert_eq!(names(&p3), ["p04"]);
        assert!(p3.next.is_none() && p3.remaining.is_none());
    }

    #[test]
    fn no_limit_or_a_big_one_is_the_whole_list() {
        assert_eq!(page(objs(3), None, None).unwrap().items.len(), 3);
        let p = page(objs(3), Some("500"), None).unwrap();
        assert_eq!(p.items.len(), 3);
        assert!(p.next.is_none());
    }

    #[test]
    fn an_object_deleted_between_pages_is_not_a_gap() {
        let p1 = page(objs(4), Some("2"), None).unwrap();
        let mut now = objs(4);
        now.remove(2);
        let p2 = page(now, Some("2"), p1.next.as_deref()).unwrap();
        assert_eq!(names(&p2), ["p03"]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(page(objs(1), Some("x"), None)
            .unwrap_err()
            .contains("limit"));
        let e = page(objs(1), None, Some("%%%")).unwrap_err();
        assert!(e.starts_with("continue key is not valid"), "{e}");
        let e = page(objs(1), None, Some("e30")).unwrap_err();
        assert!(e.contains("not a token"), "{e}");
    }
}
