//! The fleet's device table: one box per device in a hash table found by
//! the device's own id, so the id is stored once and a slot costs one
//! pointer (a million devices: 16 MiB of table, where a map keyed by a
//! copy of the id took 64 MiB and twice that while growing).

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::device::Device;

#[derive(Default)]
pub struct Devices {
    table: HashTable<Box<Device>>,
    hasher: DefaultHashBuilder,
}

impl Devices {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.table.find(self.hasher.hash_one(id), |d| d.id == id).map(|d| &**d)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Device> {
        self.table.find_mut(self.hasher.hash_one(id), |d| d.id == id).map(|d| &mut **d)
    }

    /// The device `id`, made by `make` when there is none.
    pub fn get_or_insert_with(&mut self, id: &str, make: impl FnOnce() -> Device) -> &mut Device {
        let hasher = &self.hasher;
        let entry = self.table.entry(hasher.hash_one(id), |d| d.id == id, |d| hasher.hash_one(d.id.as_str()));
        entry.or_insert_with(|| Box::new(make())).into_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Device> {
        self.table.iter().map(|d| &**d)
    }

    /// Keeps the devices `keep` says to, which may change them.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Device) -> bool) {
        self.table.retain(|d| keep(d));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Rules;

    #[test]
    fn finds_inserts_once_and_retains() {
        let rules = Arc::new(Rules::builtin());
        let mut devices = Devices::default();
        for i in 0..1000 {
            let id = format!("d{i}");
            devices.get_or_insert_with(&id, || Device::new(id.as_str(), format!("t/{i}"), Arc::clone(&rules)));
        }
        let again = devices.get_or_insert_with("d7", || Device::new("d7", "elsewhere", Arc::clone(&rules)));
        assert_eq!(again.topic, "t/7", "an existing device is kept, not replaced");
        assert_eq!(devices.len(), 1000);
        assert!(devices.contains("d999") && !devices.contains("d1000"));
        devices.retain(|d| d.id.ends_with('0'));
        assert_eq!(devices.len(), 100);
        assert_eq!(devices.get_mut("d10").map(|d| d.topic.as_str()), Some("t/10"));
        assert!(devices.get("d11").is_none());
        assert_eq!(devices.iter().count(), 100);
    }
}
