//! Tests of the colour maps.

use super::*;

#[test]
fn colormap_is_viridis_and_monotone_in_brightness() {
    assert_eq!(colormap(0.0), [68, 1, 84]);
    assert_eq!(colormap(1.0), [253, 231, 37]);
    assert_eq!(colormap(0.5), [0x21, 0x90, 0x8C]);
    assert_eq!(colormap(-1.0), colormap(0.0));
    assert_eq!(colormap(f64::NAN), colormap(0.0));
    let brightness = |v| colormap(v).iter().map(|&c| u32::from(c)).sum::<u32>();
    for k in 0..100 {
        let (a, b) = (f64::from(k) / 100.0, f64::from(k + 1) / 100.0);
        assert!(brightness(a) <= brightness(b) + 3, "{a} vs {b}");
    }
}
