//! The Nicira-extension (NXM) fields our flows name in `move` actions and
//! register matches, with the names ovs-ofctl writes and the 4-byte NXM
//! headers Open vSwitch encodes them with (before OpenFlow 1.5 it writes
//! a move's fields as NXM headers whatever the connection's version).

/// A field a `move` copies from or to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NxmField {
    EthDst,
    EthSrc,
    Ipv4Src,
    Ipv4Dst,
    Ipv6Src,
    Ipv6Dst,
    /// reg0 .. reg15, 32 bits each.
    Reg(u8),
}

/// Open vSwitch's registers: reg0 .. reg15.
pub const REGISTERS: u8 = 16;

const NXM_0: u16 = 0x0000;
const NXM_1: u16 = 0x0001;

impl NxmField {
    /// The name ovs-ofctl gives it in a `move`.
    pub fn name(self) -> String {
        match self {
            NxmField::EthDst => "NXM_OF_ETH_DST".into(),
            NxmField::EthSrc => "NXM_OF_ETH_SRC".into(),
            NxmField::Ipv4Src => "NXM_OF_IP_SRC".into(),
            NxmField::Ipv4Dst => "NXM_OF_IP_DST".into(),
            NxmField::Ipv6Src => "NXM_NX_IPV6_SRC".into(),
            NxmField::Ipv6Dst => "NXM_NX_IPV6_DST".into(),
            NxmField::Reg(index) => format!("NXM_NX_REG{index}"),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "NXM_OF_ETH_DST" => NxmField::EthDst,
            "NXM_OF_ETH_SRC" => NxmField::EthSrc,
            "NXM_OF_IP_SRC" => NxmField::Ipv4Src,
            "NXM_OF_IP_DST" => NxmField::Ipv4Dst,
            "NXM_NX_IPV6_SRC" => NxmField::Ipv6Src,
            "NXM_NX_IPV6_DST" => NxmField::Ipv6Dst,
            _ => {
                let index: u8 = name.strip_prefix("NXM_NX_REG")?.parse().ok()?;
                return (index < REGISTERS).then_some(NxmField::Reg(index));
            }
        })
    }

    /// (class, field, payload bytes)
    fn parts(self) -> (u16, u8, u8) {
        match self {
            NxmField::EthDst => (NXM_0, 1, 6),
            NxmField::EthSrc => (NXM_0, 2, 6),
            NxmField::Ipv4Src => (NXM_0, 7, 4),
            NxmField::Ipv4Dst => (NXM_0, 8, 4),
            NxmField::Ipv6Src => (NXM_1, 19, 16),
            NxmField::Ipv6Dst => (NXM_1, 20, 16),
            NxmField::Reg(index) => (NXM_1, index, 4),
        }
    }

    /// Its unmasked NXM header.
    pub fn header(self) -> u32 {
        let (class, field, len) = self.parts();
        u32::from(class) << 16 | u32::from(field) << 9 | u32::from(len)
    }

    /// The field an unmasked NXM header names, if it is one of these.
    pub fn of_header(header: u32) -> Option<Self> {
        let all = [
            NxmField::EthDst,
            NxmField::EthSrc,
            NxmField::Ipv4Src,
            NxmField::Ipv4Dst,
            NxmField::Ipv6Src,
            NxmField::Ipv6Dst,
        ];
        all.into_iter()
            .chain((0..REGISTERS).map(NxmField::Reg))
            .find(|f| f.header() == header)
    }

    /// Width in bits.
    pub fn bits(self) -> u16 {
        u16::from(self.parts().2) * 8
    }
}

/// Bits `offset .. offset + bits` of a field (bit 0 is the least
/// significant), as `NAME[]` (the whole field) or `NAME[lo..hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subfield {
    pub field: NxmField,
    pub offset: u16,
    pub bits: u16,
}

impl Subfield {
    pub fn whole(field: NxmField) -> Self {
        Subfield {
            field,
            offset: 0,
            bits: field.bits(),
        }
    }

    /// Bits `offset .. offset + bits` of `field`; None when empty or past
    /// the field's end.
    pub fn new(field: NxmField, offset: u16, bits: u16) -> Option<Self> {
        (bits > 0 && offset.checked_add(bits)? <= field.bits()).then_some(Subfield {
            field,
            offset,
            bits,
        })
    }

    /// `NAME[]`, `NAME[lo..hi]` or `NAME[bit]`; None for anything else or
    /// bits past the field's end.
    pub fn parse(text: &str) -> Option<Self> {
        let (name, range) = text.strip_suffix(']')?.split_once('[')?;
        let field = NxmField::parse(name)?;
        let (offset, bits) = match range.split_once("..") {
            _ if range.is_empty() => (0, field.bits()),
            Some((lo, hi)) => {
                let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
                (lo, hi.checked_sub(lo)?.checked_add(1)?)
            }
            None => (range.parse().ok()?, 1),
        };
        Subfield::new(field, offset, bits)
    }
}

impl std::fmt::Display for Subfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.field.name();
        if self.offset == 0 && self.bits == self.field.bits() {
            write!(f, "{name}[]")
        } else if self.bits == 1 {
            write!(f, "{name}[{}]", self.offset)
        } else {
            write!(
                f,
                "{name}[{}..{}]",
                self.offset,
                self.offset + self.bits - 1
            )
        }
    }
}

/// A register match as ovs-ofctl writes it: `reg11=0`, `reg11=0x2`,
/// `reg12=0xc6128000/0xffff8000` (no mask when every bit is matched).
pub fn format_reg_match(index: u8, value: u32, mask: u32) -> String {
    let hex = |v: u32| {
        if v == 0 {
            "0".to_string()
        } else {
            format!("{v:#x}")
        }
    };
    if mask == u32::MAX {
        format!("reg{index}={}", hex(value))
    } else {
        format!("reg{index}={}/{}", hex(value), hex(mask))
    }
}

/// Setting a whole register as ovs-ofctl writes it: `set_field:0x2->reg11`.
pub fn format_reg_set(index: u8, value: u32) -> String {
    format!("set_field:{value:#x}->reg{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subfields_round_trip_and_out_of_range_is_refused() {
        for text in [
            "NXM_OF_IP_DST[]",
            "NXM_NX_IPV6_DST[96..127]",
            "NXM_NX_REG15[]",
            "NXM_NX_REG11[0]",
        ] {
            let parsed = Subfield::parse(text).expect(text);
            assert_eq!(parsed.to_string(), text);
        }
        for bad in [
            "NXM_NX_REG16[]",
            "NXM_OF_IP_DST[0..32]",
            "NXM_OF_IP_DST[5..4]",
            "NXM_OF_IP_DST",
            "NXM_NX_TUN_ID[]",
        ] {
            assert_eq!(Subfield::parse(bad), None, "{bad}");
        }
        assert_eq!(NxmField::of_header(0x0001_1804), Some(NxmField::Reg(12)));
        assert_eq!(
            NxmField::of_header(NxmField::Ipv4Dst.header()),
            Some(NxmField::Ipv4Dst)
        );
    }

    #[test]
    fn register_matches_read_as_ovs_ofctl_writes_them() {
        assert_eq!(format_reg_match(11, 0, u32::MAX), "reg11=0");
        assert_eq!(format_reg_match(11, 2, u32::MAX), "reg11=0x2");
        assert_eq!(
            format_reg_match(12, 0xc612_8000, 0xffff_8000),
            "reg12=0xc6128000/0xffff8000"
        );
        assert_eq!(format_reg_match(12, 0, 0x8000_0000), "reg12=0/0x80000000");
        assert_eq!(format_reg_set(11, 2), "set_field:0x2->reg11");
    }
}
