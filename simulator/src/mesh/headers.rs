//! The header sets requests carry: each client's header profiles, each with the pseudo-headers
//! `:method` and `:path` (`GET` and `/` unless set), as Envoy matches a route's method and path.
//! A call carries its caller's set, with the method and path the call sets in place of the
//! caller's: every set a call can carry is made when the mesh is built, so a request names its
//! set by number.

/// Every header set of the mesh, and what each call's method and path make of each.
#[derive(Debug, Default)]
pub(super) struct HeaderSets {
    /// Header sets: lower-case names, sorted by name.
    pub(super) sets: Vec<Vec<(String, String)>>,
    /// The (method, path) calls set, each once.
    rewrites: Vec<(Option<String>, Option<String>)>,
    /// For each rewrite, the set each set becomes.
    maps: Vec<Vec<u32>>,
}

pub(super) const METHOD: &str = ":method";
pub(super) const PATH: &str = ":path";

impl HeaderSets {
    /// The set of a client's header profile (names lower-cased), added if new.
    pub(super) fn profile(&mut self, headers: &[(String, String)]) -> (u32, Vec<(String, String)>) {
        let mut set: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        for (name, default) in [(METHOD, "GET"), (PATH, "/")] {
            if !set.iter().any(|(k, _)| k == name) {
                set.push((name.into(), default.into()));
            }
        }
        set.sort_by(|a, b| a.0.cmp(&b.0));
        (self.intern(set.clone()), set)
    }

    fn intern(&mut self, set: Vec<(String, String)>) -> u32 {
        match self.sets.iter().position(|s| *s == set) {
            Some(i) => i as u32,
            None => {
                self.sets.push(set);
                (self.sets.len() - 1) as u32
            }
        }
    }

    /// Makes every set the calls' `rewrites` can produce from the sets so far, and the maps.
    pub(super) fn close(&mut self, rewrites: Vec<(Option<String>, Option<String>)>) {
        self.rewrites = rewrites;
        let mut i = 0;
        while i < self.sets.len() {
            for r in 0..self.rewrites.len() {
                let (method, path) = self.rewrites[r].clone();
                let mut set = self.sets[i].clone();
                for (name, value) in [(METHOD, method), (PATH, path)] {
                    if let Some(v) = value
                        && let Some(slot) = set.iter_mut().find(|(k, _)| k == name)
                    {
                        slot.1 = v;
                    }
                }
                self.intern(set);
            }
            i += 1;
        }
        self.maps = (0..self.rewrites.len())
            .map(|r| {
                let (method, path) = &self.rewrites[r];
                self.sets
                    .iter()
                    .map(|set| {
                        let mut set = set.clone();
                        for (name, value) in [(METHOD, method), (PATH, path)] {
                            if let Some(v) = value
                                && let Some(slot) = set.iter_mut().find(|(k, _)| k == name)
                            {
                                slot.1 = v.clone();
                            }
                        }
                        self.sets.iter().position(|s| *s == set).unwrap_or(0) as u32
                    })
                    .collect()
            })
            .collect();
    }

    /// The rewrite a call with this method and path makes, if it sets either.
    pub(super) fn rewrite(&self, method: &Option<String>, path: &Option<String>) -> Option<u32> {
        if method.is_none() && path.is_none() {
            return None;
        }
        self.rewrites
            .iter()
            .position(|(m, p)| m == method && p == path)
            .map(|i| i as u32)
    }

    /// The set a call with rewrite `r` carries when its caller carries `set`.
    pub(super) fn rewritten(&self, r: u32, set: u32) -> u32 {
        self.maps[r as usize][set as usize]
    }

    /// The value of header `name` in `set`.
    pub(super) fn value(&self, set: u32, name: &str) -> &str {
        self.sets
            .get(set as usize)
            .and_then(|s| s.iter().find(|(k, _)| k == name))
            .map_or("-", |(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_keeps_its_callers_headers_and_sets_its_own_path() {
        let mut h = HeaderSets::default();
        let (jason, _) = h.profile(&[("End-User".into(), "jason".into())]);
        let (anon, _) = h.profile(&[]);
        h.close(vec![(None, Some("/ratings/0".into()))]);
        let r = h
            .rewrite(&None, &Some("/ratings/0".into()))
            .expect("a rewrite");
        let call = h.rewritten(r, jason);
        assert_eq!(h.value(call, "end-user"), "jason");
        assert_eq!(h.value(call, PATH), "/ratings/0");
        assert_eq!(h.value(call, METHOD), "GET");
        assert_eq!(h.value(h.rewritten(r, anon), "end-user"), "-");
        assert_eq!(h.value(jason, PATH), "/");
    }
}
