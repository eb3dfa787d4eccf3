//! Lists: selectors, the revision a list reads at, pages and their continue tokens.

use base64::Engine;
use devplane_store::{KeyValue, ListOptions, ListPage, Rev, StoreError};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::Request;
use super::codec::decode;
use super::label_index::{index_decides, selector_terms, stored_labels};
use super::view_json::{Writers, write_view_json};
use crate::builtin::{self, Builtin};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::Resource;
use crate::request::Query;
use crate::selector::{FieldSelector, LabelSelector, events_v1_field_label, field_value};
use crate::server::Inner;

/// Selectors of a list or watch, checked against what the resource supports.
pub struct Selectors {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parse and check the selectors of a request.
    pub fn parse(resource: &Resource, query: &Query) -> ApiResult<Selectors> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        for field in fields.fields() {
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || resource.selectable_fields.iter().any(|f| f == field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
        }
        Ok(Selectors { labels, fields })
    }

    /// Whether there is nothing to select by.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether a stored object matches, decided by its stored labels alone ([`by_labels`]):
    /// `None` when the object itself must decide (field selectors, a converting view, labels
    /// that cannot be read this way).
    pub fn matches_by_labels(&self, resource: &Resource, kv: &KeyValue) -> Option<bool> {
        match by_labels(resource, self, &[], kv) {
            ByLabels::Excluded => Some(false),
            ByLabels::Listed => Some(true),
            ByLabels::Decode => None,
        }
    }

    /// Whether an object (in the resource's view) matches.
    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        if !self.labels.matches(object::labels(object)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        // Event selectors use the stored (core/v1) names.
        let stored;
        let target = if resource.builtin == Some(Builtin::EventsV1) {
            stored = builtin::event_from_v1(object.clone());
            &stored
        } else {
            object
        };
        self.fields.matches(|field| {
            let field = match resource.builtin {
                Some(Builtin::EventsV1) => events_v1_field_label(field).unwrap_or(field),
                _ => field,
            };
            field_value(target, field)
        })
    }
}

/// The continue token of a list page.
fn continue_token(rev: Rev, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": last_key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn parse_continue(token: &str) -> ApiResult<(Rev, String)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rev = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = value
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    Ok((rev, start))
}

/// A continued list reads at its token's revision: as kube-apiserver, it takes no other.
fn continued_options(query: &Query) -> ApiResult<()> {
    if query
        .get("resourceVersionMatch")
        .is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
        ));
    }
    if query
        .get("resourceVersion")
        .is_some_and(|v| !v.is_empty() && v != "0")
    {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    Ok(())
}

/// The revision a list reads at, per `resourceVersion` and `resourceVersionMatch`.
async fn list_revision(inner: &Inner, query: &Query, limit: Option<u64>) -> ApiResult<Option<Rev>> {
    let rv = query.get("resourceVersion").filter(|v| !v.is_empty());
    let matching = query.get("resourceVersionMatch").filter(|v| !v.is_empty());
    if matching.is_some() && rv.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let Some(rv) = rv else { return Ok(None) };
    let requested: Rev = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}")))?;
    match matching {
        Some("Exact") if requested == 0 => Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        )),
        Some("Exact") => Ok(Some(requested)),
        None if requested != 0 && limit.is_some() => Ok(Some(requested)),
        None | Some("NotOlderThan") => {
            let current = inner.store.current_revision().await?;
            if requested > current {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {requested}, current: {current}"
                )));
            }
            Ok(None)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}"
        ))),
    }
}

/// Objects of a list request: (items in view form, list revision, continue token).
pub async fn list_objects(
    inner: &Inner,
    req: &Request,
    selectors: &Selectors,
) -> ApiResult<(Vec<Value>, Rev, Option<String>)> {
    let mut items = Vec::new();
    let (rev, token) = list_each(inner, req, selectors, &mut |item| {
        items.push(item.into_object()?);
        Ok(())
    })
    .await?;
    Ok((items, rev, token))
}

/// One object of a list as the store holds it, with its view when the selectors needed that.
pub struct Listed<'a> {
    resource: &'a Resource,
    kv: &'a KeyValue,
    object: Option<Value>,
    writers: Writers,
}

impl Listed<'_> {
    /// The object in the resource's view.
    pub fn into_object(self) -> ApiResult<Value> {
        match self.object {
            Some(object) => Ok(object),
            None => decode(self.resource, self.kv),
        }
    }

    /// Append the object's JSON in the resource's view to `out`, written from the stored
    /// bytes (see [`write_view_json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> ApiResult<()> {
        write_view_json(self.resource, self.kv, self.writers, out)
    }
}

/// [`list_objects`], handing each object to `each` as it is read instead of collecting them
/// (a list of 100,000 objects is serialized as it goes, never held as values all at once;
/// without selectors, an object is only decoded if `each` asks for its value). Returns the
/// list's revision and the continue token of a limited list.
pub async fn list_each(
    inner: &Inner,
    req: &Request,
    selectors: &Selectors,
    each: &mut (dyn FnMut(Listed<'_>) -> ApiResult<()> + Send),
) -> ApiResult<(Rev, Option<String>)> {
    list_pages(inner, req, selectors, &mut EachItem(each)).await
}

/// Where the objects of a list go, as they are read.
pub trait ListSink: Send {
    /// The next object of the list.
    fn item(&mut self, item: Listed<'_>) -> ApiResult<()>;

    /// Whether the sink holds enough to hand on before the page's end ([`ListSink::flush`]).
    fn holds_enough(&self) -> bool {
        false
    }

    /// The list may wait here: every object of a page has been handed over (the next page is
    /// read once this is done), or the sink [`holds enough`](ListSink::holds_enough). An error
    /// ends the list with it.
    fn flush(&mut self) -> BoxFuture<'_, ApiResult<()>>;
}

/// A sink that hands each object to a function and has nothing to do between pages.
struct EachItem<'f>(&'f mut (dyn FnMut(Listed<'_>) -> ApiResult<()> + Send));

impl ListSink for EachItem<'_> {
    fn item(&mut self, item: Listed<'_>) -> ApiResult<()> {
        (self.0)(item)
    }

    fn flush(&mut self) -> BoxFuture<'_, ApiResult<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Objects read from the store per page of a list without a limit: a page holds its objects'
/// stored text (shared with the store, not copied), about 1 MiB of objects of 1 KiB.
const UNLIMITED_PAGE: usize = 1_000;

/// [`list_each`] with a [`ListSink`]: the sink may also wait after each page, and whenever it
/// holds enough.
pub async fn list_pages(
    inner: &Inner,
    req: &Request,
    selectors: &Selectors,
    sink: &mut dyn ListSink,
) -> ApiResult<(Rev, Option<String>)> {
    let resource = &req.resource;
    let writers = Writers::of(&*inner.store);
    let limit = req.query.number("limit")?.filter(|l| *l > 0);
    let continuation = req
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(parse_continue)
        .transpose()?;
    let (mut rev, mut start_after) = match &continuation {
        Some((rev, start)) => {
            continued_options(&req.query)?;
            (Some(*rev), Some(start.clone()))
        }
        None => (list_revision(inner, &req.query, limit).await?, None),
    };
    // metadata.name=x in one namespace is one key: read it directly.
    if let (Some(name), None, true) = (
        selectors.fields.required_value("metadata.name"),
        &continuation,
        rev.is_none(),
    ) {
        let namespace = selectors
            .fields
            .required_value("metadata.namespace")
            .or(req.ns());
        if !resource.namespaced || namespace.is_some() {
            let current = inner.store.current_revision().await?;
            if let Some(kv) = inner.read_stored(resource, namespace, name).await? {
                let object = decode(resource, &kv)?;
                if selectors.matches(resource, &object)
                    && (req.ns().is_none() || object::namespace(&object) == req.ns())
                {
                    sink.item(Listed {
                        resource,
                        kv: &kv,
                        object: Some(object),
                        writers,
                    })?;
                }
            }
            return Ok((current, None));
        }
    }
    let prefix = resource.prefix(req.ns());
    let pairs = required_pairs(&selectors.labels);
    let mut terms = selector_terms(&selectors.labels);
    let mut taken: u64 = 0;
    let page_size = limit
        .map(|l| (l as usize).max(100))
        .unwrap_or(UNLIMITED_PAGE);
    // The label index returns exactly the objects that carry a term at the list's revision,
    // latest or not: for a selector of that one requirement no page needs a check.
    let decided_by_index = selectors.fields.is_empty() && index_decides(&selectors.labels);
    loop {
        let opts = ListOptions {
            prefix: prefix.clone(),
            start_after: start_after.clone(),
            limit: Some(page_size),
            rev,
        };
        let page = match read_page(inner, opts, &mut terms).await {
            Ok(page) => page,
            Err(StoreError::Compacted { .. }) if continuation.is_some() => {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        rev = Some(page.rev);
        let through_index = terms.is_some();
        let decided = decided_by_index && through_index;
        let count = page.items.len();
        for (i, kv) in page.items.iter().enumerate() {
            if through_index && i % READ_AHEAD == 0 {
                read_ahead(&page.items[i..count.min(i + READ_AHEAD)]);
            }
            // Without selectors every object matches, and none needs decoding here; label
            // selectors alone read only the labels.
            let (object, matched) = if selectors.is_empty() || decided {
                (None, true)
            } else {
                match by_labels(resource, selectors, &pairs, kv) {
                    ByLabels::Excluded => continue,
                    ByLabels::Listed => (None, true),
                    ByLabels::Decode => {
                        let object = decode(resource, kv)?;
                        let matched = selectors.matches(resource, &object);
                        (Some(object), matched)
                    }
                }
            };
            if matched {
                sink.item(Listed {
                    resource,
                    kv,
                    object,
                    writers,
                })?;
                taken += 1;
                if sink.holds_enough() {
                    sink.flush().await?;
                }
            }
            if let Some(limit) = limit
                && taken >= limit
                && (i + 1 < count || page.more)
            {
                return Ok((page.rev, Some(continue_token(page.rev, &kv.key))));
            }
        }
        sink.flush().await?;
        if !page.more {
            return Ok((page.rev, None));
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

/// Objects of a page read through the label index whose values [`read_ahead`] starts
/// fetching at once, before they are judged and written.
const READ_AHEAD: usize = 32;

/// Reads every cache line of the values of `items`.
///
/// A full list reads the values one after another as the store packed them, and the
/// processor fetches the lines ahead of the writer on its own. The values a label-selected
/// list reads lie scattered (a sixteenth of the objects: one in sixteen), and writing them
/// waited for memory at most lines. These loads depend on nothing but the values' addresses,
/// so they overlap. Reading the first two lines of each value was enough while writing an
/// object meant reading it; now that most are copied, the copy caught up with the processor's
/// own prefetching, and reading every line paid (in four alternating pairs of runs, the
/// selected lists' ratio to the full list was lower each time).
fn read_ahead(items: &[KeyValue]) {
    let mut seen = 0u8;
    for kv in items {
        for at in (0..kv.value.len()).step_by(64) {
            seen ^= kv.value[at];
        }
    }
    std::hint::black_box(seen);
}

/// What a stored object's labels say about listing it.
#[derive(Debug, PartialEq)]
enum ByLabels {
    /// Its labels do not match: it is not listed.
    Excluded,
    /// Its labels match and the selectors need nothing else: it is listed.
    Listed,
    /// The whole object decides: field selectors, a view that converts objects, or JSON the
    /// labels cannot be read from this way.
    Decode,
}

/// Judges a stored object by its labels, read from its JSON without parsing the rest, so a
/// label-selected list costs about what listing the objects it returns costs. `pairs` are the
/// selector's [`required_pairs`].
fn by_labels(
    resource: &Resource,
    selectors: &Selectors,
    pairs: &[String],
    kv: &KeyValue,
) -> ByLabels {
    let selector = &selectors.labels;
    if !selector.is_empty() {
        // Stored objects are compact JSON written by this server: a label `k=v` appears as
        // the bytes `"k":"v"`, so an object without them cannot match, and the bytes are
        // searched for before anything is parsed.
        if !pairs
            .iter()
            .all(|pair| memchr::memmem::find(&kv.value, pair.as_bytes()).is_some())
        {
            return ByLabels::Excluded;
        }
        match stored_labels(&kv.value) {
            Ok(labels) if !selector.matches(labels.as_ref()) => return ByLabels::Excluded,
            Ok(_) => {}
            Err(()) => return ByLabels::Decode,
        }
    }
    if selectors.fields.is_empty() && resource.builtin != Some(Builtin::EventsV1) {
        ByLabels::Listed
    } else {
        ByLabels::Decode
    }
}

/// One page of a list: read through the store's label index when the selector names labels
/// and the store keeps one, else all objects of the range. A store without an index answers
/// `None`, and `terms` is cleared so that later pages scan directly.
async fn read_page(
    inner: &Inner,
    opts: ListOptions,
    terms: &mut Option<Vec<String>>,
) -> Result<ListPage, StoreError> {
    if let Some(wanted) = terms.as_deref() {
        match inner.store.list_by_terms(opts.clone(), wanted).await? {
            Some(page) => return Ok(page),
            None => *terms = None,
        }
    }
    inner.store.list(opts).await
}

/// The `"key":"value"` texts every matching object contains: one per equality requirement.
fn required_pairs(selector: &LabelSelector) -> Vec<String> {
    use crate::selector::Operator;
    selector
        .requirements()
        .iter()
        .filter(|r| matches!(r.operator(), Operator::Equals | Operator::DoubleEquals))
        .filter_map(|r| {
            let [value] = r.values() else { return None };
            Some(format!(
                "{}:{}",
                Value::from(r.key()),
                Value::from(value.as_str())
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(object: Value) -> KeyValue {
        KeyValue {
            key: "/registry/x/y".into(),
            value: serde_json::to_vec(&object).expect("json").into(),
            create_rev: 1,
            mod_rev: 1,
        }
    }

    fn selectors(labels: &str, fields: &str) -> Selectors {
        Selectors {
            labels: LabelSelector::parse(labels).expect("label selector"),
            fields: FieldSelector::parse(fields).expect("field selector"),
        }
    }

    fn resource(plural: &str, group: &str) -> Resource {
        builtin::resources()
            .into_iter()
            .find(|r| r.plural == plural && r.group == group)
            .expect("a built-in resource")
    }

    #[test]
    fn the_labels_alone_list_or_exclude_what_they_can_and_leave_the_rest_to_the_object() {
        let config_maps = resource("configmaps", "");
        let selected = selectors("shard=3,app.kubernetes.io/name,tier!=web", "");
        let pairs = required_pairs(&selected.labels);
        assert_eq!(pairs, vec![r#""shard":"3""#.to_string()]);
        let matching =
            stored(json!({"metadata": {"labels": {"app.kubernetes.io/name": "a", "shard": "3"}}}));
        let other_shard =
            stored(json!({"metadata": {"labels": {"app.kubernetes.io/name": "a", "shard": "13"}}}));
        let only_annotated = stored(
            json!({"metadata": {"annotations": {"shard": "3"}, "labels": {"app.kubernetes.io/name": "a"}}}),
        );
        let web = stored(
            json!({"metadata": {"labels": {"app.kubernetes.io/name": "a", "shard": "3", "tier": "web"}}}),
        );
        let judge = |selectors: &Selectors, resource: &Resource, kv: &KeyValue| {
            by_labels(resource, selectors, &required_pairs(&selectors.labels), kv)
        };
        assert_eq!(judge(&selected, &config_maps, &matching), ByLabels::Listed);
        for excluded in [&other_shard, &only_annotated, &web] {
            assert_eq!(judge(&selected, &config_maps, excluded), ByLabels::Excluded);
        }
        // A field selector, or a view that converts objects, needs the object itself once
        // the labels match.
        let with_fields = selectors("shard=3", "metadata.name=x");
        assert_eq!(
            judge(&with_fields, &config_maps, &matching),
            ByLabels::Decode
        );
        assert_eq!(
            judge(&with_fields, &config_maps, &other_shard),
            ByLabels::Excluded
        );
        let events = resource("events", "events.k8s.io");
        assert_eq!(judge(&selected, &events, &matching), ByLabels::Decode);
        assert_eq!(judge(&selected, &events, &web), ByLabels::Excluded);
        // Labels that cannot be read this way: the object decides.
        let odd = stored(json!({"metadata": {"annotations": {"shard": "3"}, "labels": "odd"}}));
        assert_eq!(judge(&selected, &config_maps, &odd), ByLabels::Decode);
    }
}
