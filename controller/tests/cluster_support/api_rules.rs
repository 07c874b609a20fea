//! The API server's rules as far as the fake needs them: server-side apply of a Service's
//! ports list-map, JSON merge and JSON patch, and which paths are collections.

use super::*;

/// The key of a Service port in its list-map: port and protocol (TCP by default).
fn port_key(port: &Value) -> Value {
    json!([port["port"], port["protocol"].as_str().unwrap_or("TCP")])
}

/// A Service's `spec.ports` after an apply, as server-side apply merges a list-map: the applied
/// entries, and the entries of others kept (those this manager applied before and left out
/// now are removed). `None` when the apply sets no ports or the object is not a Service.
pub(super) fn applied_ports(
    s: &mut Store,
    path: &str,
    current: &Value,
    body: &Value,
) -> Option<Value> {
    if !path.contains("/services/") {
        return None;
    }
    let applied = body["spec"]["ports"].as_array()?;
    let keys: Vec<Value> = applied.iter().map(port_key).collect();
    let before = s.applied_ports.insert(path.to_string(), keys.clone());
    let ours_before = before.unwrap_or_default();
    let existing = current["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // An applied entry is merged into the one with its key (fields of others, such as an
    // allocated nodePort, stay).
    let mut ports: Vec<Value> = applied
        .iter()
        .map(|a| {
            let mut entry = existing
                .iter()
                .find(|e| port_key(e) == port_key(a))
                .cloned()
                .unwrap_or_else(|| json!({}));
            merge(&mut entry, a);
            entry
        })
        .collect();
    for p in existing {
        let key = port_key(&p);
        if !keys.contains(&key) && !ours_before.contains(&key) {
            ports.push(p);
        }
    }
    Some(Value::Array(ports))
}

/// Server-side apply by `manager` to an object that records its field managers
/// (`metadata.managedFields`, as Flagger's fixtures do; objects without it are merged as
/// before): the manager gets an `Apply` entry, and when it is the only manager of the object
/// itself (status subresource entries aside) the fields its last apply set and this one does
/// not are removed, as the API server removes fields no other manager owns. With another
/// manager on the object, nothing is removed: the fake does not know which fields it owns,
/// and the API server keeps those it does.
pub(super) fn managed_apply(
    s: &mut Store,
    path: &str,
    obj: &mut Value,
    manager: Option<&str>,
    body: &Value,
) {
    let (Some(manager), Some(entries)) = (
        manager,
        obj["metadata"]["managedFields"].as_array().cloned(),
    ) else {
        return;
    };
    let sole = entries
        .iter()
        .all(|e| e["manager"] == manager || !e["subresource"].is_null());
    let before = s.applied.insert(path.to_string(), body.clone());
    if sole && let Some(before) = before {
        drop_unapplied(obj, &before, body);
    }
    if !entries
        .iter()
        .any(|e| e["manager"] == manager && e["operation"] == "Apply")
    {
        let mut entries = entries;
        entries.push(json!({"manager": manager, "operation": "Apply",
                            "apiVersion": body["apiVersion"], "fieldsType": "FieldsV1"}));
        obj["metadata"]["managedFields"] = Value::Array(entries);
    }
}

/// Removes from `obj` the keys `before` set and `now` does not, map by map.
fn drop_unapplied(obj: &mut Value, before: &Value, now: &Value) {
    let (Some(o), Some(b)) = (obj.as_object_mut(), before.as_object()) else {
        return;
    };
    for (k, v) in b {
        match now.get(k) {
            None => {
                o.remove(k);
            }
            Some(n) if v.is_object() && n.is_object() => {
                if let Some(child) = o.get_mut(k) {
                    drop_unapplied(child, v, n);
                }
            }
            Some(_) => {}
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Collections are the paths the controller lists: `.../<resource>` with no name after it.
pub(super) fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = if segments.first() == Some(&"api") {
        2
    } else {
        3
    };
    match segments.get(base) {
        Some(&"namespaces") => segments.len() == base + 3,
        Some(_) => segments.len() == base + 1,
        None => false,
    }
}

/// Whether the object at `object` is an item of the collection `list` (namespaced or across
/// namespaces).
pub(super) fn in_collection(list: &str, object: &str) -> bool {
    let Some((parent, _name)) = object.rsplit_once('/') else {
        return false;
    };
    if parent == list {
        return true;
    }
    // `/apis/g/v/deployments` lists `/apis/g/v/namespaces/*/deployments/*`.
    let Some((prefix, resource)) = list.rsplit_once('/') else {
        return false;
    };
    parent.starts_with(&format!("{prefix}/namespaces/"))
        && parent.ends_with(&format!("/{resource}"))
        && parent.matches('/').count() == list.matches('/').count() + 2
}

fn pointer_parent<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((doc.pointer_mut(parent)?, last.to_string()))
}

/// The JSON patch operations the finalizer helper sends: test, add, remove, replace.
pub(super) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("not an array")? {
        let path = op["path"].as_str().ok_or("no path")?;
        match op["op"].as_str() {
            Some("test") => {
                let found = doc.pointer(path).cloned().unwrap_or(Value::Null);
                if found != op["value"] {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some("add" | "replace") => {
                let (parent, key) = pointer_parent(doc, path).ok_or("bad path")?;
                match parent {
                    Value::Array(a) if key == "-" => a.push(op["value"].clone()),
                    Value::Array(a) => {
                        let i: usize = key.parse().map_err(|_| "bad index")?;
                        a.insert(i.min(a.len()), op["value"].clone());
                    }
                    Value::Object(o) => {
                        o.insert(key, op["value"].clone());
                    }
                    _ => return Err("bad parent".into()),
                }
            }
            Some("remove") => {
                let (parent, key) = pointer_parent(doc, path).ok_or("bad path")?;
                match parent {
                    Value::Array(a) => {
                        let i: usize = key.parse().map_err(|_| "bad index")?;
                        if i >= a.len() {
                            return Err("no such index".into());
                        }
                        a.remove(i);
                    }
                    Value::Object(o) => {
                        o.remove(&key).ok_or("no such key")?;
                    }
                    _ => return Err("bad parent".into()),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

/// A status update by `manager` (a merge patch of `/status`) of an object that records its
/// field managers: an update takes over the fields it changes, so when `status.phase`
/// changed, the entry that owned it loses it and `manager`'s status entry owns it. Only the
/// phase is tracked (what tells whose rollout a Flagger Canary's status shows).
pub(super) fn managed_status_update(before: &Value, after: &mut Value, manager: Option<&str>) {
    let (Some(manager), Some(mut entries)) = (
        manager,
        after["metadata"]["managedFields"].as_array().cloned(),
    ) else {
        return;
    };
    if before["status"]["phase"] == after["status"]["phase"] {
        return;
    }
    for e in &mut entries {
        if let Some(status) = e["fieldsV1"]["f:status"].as_object_mut() {
            status.remove("f:phase");
        }
    }
    let ours = |e: &Value| e["manager"] == manager && e["subresource"] == "status";
    if !entries.iter().any(ours) {
        entries.push(
            json!({"manager": manager, "operation": "Update", "subresource": "status",
                            "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}),
        );
    }
    for e in entries.iter_mut().filter(|e| ours(e)) {
        e["fieldsV1"]["f:status"]["f:phase"] = json!({});
    }
    after["metadata"]["managedFields"] = Value::Array(entries);
}
