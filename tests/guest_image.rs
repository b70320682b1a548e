//! The Debian test image, built by vmrun's builder: a whole disk like a cloud image.

mod common;

use std::process::Command;

#[test]
fn image_is_a_qcow2_whole_disk_with_grub_and_one_linux_partition() {
    let image = common::guest_image();
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    assert!(info.status.success());
    let info = String::from_utf8(info.stdout).unwrap();
    assert!(info.contains(r#""format": "qcow2""#), "{info}");
    assert!(info.contains(r#""virtual-size": 4294967296"#), "{info}");

    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.raw");
    let dd = Command::new("qemu-img")
        .args(["dd", "-f", "qcow2", "-O", "raw", "bs=1048576", "count=1"])
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", head.display()))
        .status()
        .unwrap();
    assert!(dd.success());
    let head = std::fs::read(&head).unwrap();
    assert_eq!(&head[510..512], &[0x55, 0xaa], "MBR signature");
    assert_eq!(head[446], 0x80, "partition is bootable");
    assert_eq!(head[450], 0x83, "partition is Linux");
    assert_eq!(u32::from_le_bytes(head[454..458].try_into().unwrap()), 2048);
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    assert_eq!(
        &head[..0x5c],
        &boot_img[..0x5c],
        "GRUB boot code in the MBR"
    );

    // Cached by content: asking again is the same file, not a rebuild.
    let modified = std::fs::metadata(image).unwrap().modified().unwrap();
    let cache = image.parent().unwrap();
    let again = vmrun::image::debian::DebianImage::bookworm()
        .ensure_cached(cache, &|_| {})
        .unwrap();
    assert_eq!(again, image);
    assert_eq!(
        std::fs::metadata(&again).unwrap().modified().unwrap(),
        modified
    );
}
