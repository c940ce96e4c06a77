//! The OVF environment document: vSphere's way of handing a vApp its properties.
//!
//! `<Environment xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">` holds a
//! `<PropertySection>` of `<Property oe:key="…" oe:value="…"/>` elements (DMTF DSP0243,
//! "OVF environment"). Parsed with `roxmltree`, which expands no external entities and
//! bounds entity expansion.

use std::collections::BTreeMap;

use crate::{ErrorKind, VmwError};

/// The OVF environment namespace of the `key` and `value` attributes.
const OVF_ENV_NS: &str = "http://schemas.dmtf.org/ovf/environment/1";

/// `oe:key` → `oe:value` of every `Property` in a `PropertySection` (a later duplicate key
/// wins, as a reader walking the document would see it).
pub(super) fn properties(xml: &[u8]) -> Result<BTreeMap<String, String>, VmwError> {
    let bad = |why: &dyn std::fmt::Display| {
        VmwError::new(
            ErrorKind::Decode,
            format_args!("the OVF environment is not XML: {why}"),
        )
    };
    let text = std::str::from_utf8(xml).map_err(|e| bad(&e))?;
    let doc = roxmltree::Document::parse(text).map_err(|e| bad(&e))?;
    let attribute = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.attribute((OVF_ENV_NS, name))
            .or_else(|| node.attribute(name))
            .map(str::to_owned)
    };
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("Property"))
        .filter(|n| {
            n.parent_element()
                .is_some_and(|p| p.has_tag_name("PropertySection"))
        })
        .filter_map(|n| {
            Some((
                attribute(n, "key")?,
                attribute(n, "value").unwrap_or_default(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::properties;
    use crate::ErrorKind;

    #[test]
    fn reads_the_property_section_of_a_vsphere_environment() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv" oe:id="" ve:vCenterId="vm-42">
  <PlatformSection><Kind>VMware ESXi</Kind><Property oe:key="not" oe:value="this"/></PlatformSection>
  <PropertySection>
    <Property oe:key="hostname" oe:value="web-1"/>
    <Property oe:key="user-data" oe:value="I2Nsb3VkLWNvbmZpZw=="/>
    <Property oe:key="quoted" oe:value="a &amp; &quot;b&quot;"/>
    <Property oe:key="empty"/>
  </PropertySection>
</Environment>"#;
        let p = properties(xml).unwrap();
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p["hostname"], "web-1");
        assert_eq!(p["user-data"], "I2Nsb3VkLWNvbmZpZw==");
        assert_eq!(p["quoted"], "a & \"b\"");
        assert_eq!(p["empty"], "");
    }

    #[test]
    fn broken_documents_are_decode_errors() {
        for xml in [
            &b"<Environment>"[..],
            b"\xff\xfe",
            b"<!DOCTYPE x [<!ENTITY a SYSTEM \"file:///etc/passwd\">]><x>&a;</x>",
        ] {
            assert_eq!(properties(xml).unwrap_err().kind(), ErrorKind::Decode);
        }
    }
}
