//! Tests of the heat-map: pixels show the matrix, the SVG has its elements, the layout fits.

use super::*;

fn example() -> AccuracyMatrix {
    AccuracyMatrix::from_rows(&[
        vec![0.05, 0.10, 0.20],
        vec![0.95, 0.30, 0.10],
        vec![0.60, 0.85, 0.50],
        vec![0.50, 0.70, 0.90],
    ])
    .unwrap()
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "plotters writes RGB8");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn pixel(image: &(u32, u32, Vec<u8>), (x, y): (i32, i32)) -> [u8; 3] {
    let i = (y as usize * image.0 as usize + x as usize) * 3;
    [image.2[i], image.2[i + 1], image.2[i + 2]]
}

/// A point inside cell `(row, col)` clear of its centred annotation: up 3/8 of a cell.
fn swatch(layout: &HeatmapLayout, row: usize, col: usize) -> (i32, i32) {
    let (x, y) = layout.cell_center(row, col);
    (x, y - layout.cell as i32 * 3 / 8)
}

fn close([a, b, c]: [u8; 3], [x, y, z]: [u8; 3]) -> bool {
    a.abs_diff(x) <= 2 && b.abs_diff(y) <= 2 && c.abs_diff(z) <= 2
}

#[test]
fn png_heatmap_shows_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heatmap.png");
    let matrix = example();
    accuracy_heatmap(&path, &matrix, "naive — class_il").unwrap();

    let layout = HeatmapLayout::new(3);
    let image = decode_png(&path);
    assert_eq!((image.0, image.1), (layout.width, layout.height));

    let distinct: std::collections::HashSet<[u8; 3]> = image
        .2
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    assert!(distinct.len() > 100, "only {} colours", distinct.len());

    // Every cell shows its own value's colour.
    for row in 0..layout.rows() {
        for (col, &value) in matrix.row(row).iter().enumerate() {
            let got = pixel(&image, swatch(&layout, row, col));
            let want = colormap(value);
            assert!(
                close(got, want),
                "cell ({row},{col}) = {value}: {got:?} vs {want:?}"
            );
        }
    }
    // High and low accuracy are told apart: R[1,1] = 0.95 against b_1 = 0.05.
    let high = pixel(&image, swatch(&layout, 1, 0));
    let low = pixel(&image, swatch(&layout, 0, 0));
    assert!(!close(high, low), "{high:?} vs {low:?}");

    // The annotation is drawn at the centre: some pixel around it is text, not the fill.
    let (cx, cy) = layout.cell_center(1, 0);
    let fill = colormap(0.95);
    let text_pixels = (-10..=10)
        .flat_map(|dx| (-4..=4).map(move |dy| (cx + dx, cy + dy)))
        .filter(|&p| !close(pixel(&image, p), fill))
        .count();
    assert!(text_pixels > 5, "no annotation in cell (1,0)");

    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["heatmap.png"], "temporary file left behind");
    #[cfg(unix)]
    {
        // The plot gets the same mode as any file the user creates, not tempfile's 0600.
        use std::os::unix::fs::PermissionsExt;
        let reference = dir.path().join("reference");
        std::fs::write(&reference, b"").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&reference));
    }
}

#[test]
fn svg_heatmap_has_one_rectangle_and_label_per_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heatmap.SVG");
    let matrix = example();
    accuracy_heatmap(&path, &matrix, "naive").unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    // Plotters puts a text element's content on a line of its own.
    let text = |content: &str| format!("\n{content}\n</text>");

    let tasks = matrix.tasks();
    let cells = tasks * (tasks + 1);
    // Background + cells + colour-bar slices + colour-bar frame.
    assert_eq!(
        svg.matches("<rect").count(),
        1 + cells + BAR_SLICES as usize + 1
    );
    // Title + annotations + row labels + column labels + axis caption + 5 ticks.
    assert_eq!(
        svg.matches("<text").count(),
        1 + cells + (tasks + 1) + tasks + 1 + 5
    );
    for row in 0..=tasks {
        for &value in matrix.row(row) {
            let [r, g, b] = colormap(value);
            assert!(svg.contains(&format!("fill=\"#{r:02X}{g:02X}{b:02X}\"")));
            assert!(svg.contains(&text(&format!("{:.1}%", value * 100.0))));
        }
    }
    for label in [
        "naive",
        "init",
        "after T3",
        "T1",
        "T3",
        "evaluated task",
        "100%",
    ] {
        assert!(svg.contains(&text(label)), "missing {label}");
    }
}

#[test]
fn layout_scales_with_tasks_and_keeps_cells_inside_the_image() {
    for tasks in [1, 2, 5, 10, 20, 50, 100] {
        let l = HeatmapLayout::new(tasks);
        let ((x0, y0), _) = l.cell_rect(0, 0);
        let (_, (x1, y1)) = l.cell_rect(tasks, tasks - 1);
        assert!(x0 > 0 && y0 > 0);
        assert!(
            x1 + (MARGIN_RIGHT as i32) <= l.width as i32,
            "{tasks} tasks"
        );
        assert!(y1 < l.height as i32, "{tasks} tasks");
    }
    assert!(HeatmapLayout::new(20).cell < HeatmapLayout::new(5).cell);
}

#[test]
fn unknown_extension_is_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heatmap.jpg");
    let err = accuracy_heatmap(&path, &example(), "x").unwrap_err();
    assert!(matches!(err, PlotError::UnsupportedFormat { .. }));
    assert!(err.to_string().contains("heatmap.jpg"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn large_matrix_renders() {
    let tasks = 20;
    let rows: Vec<Vec<f64>> = (0..=tasks)
        .map(|i| {
            (0..tasks)
                .map(|j| ((i * 7 + j * 3) % 11) as f64 / 10.0)
                .collect()
        })
        .collect();
    let matrix = AccuracyMatrix::from_rows(&rows).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.png");
    accuracy_heatmap(&path, &matrix, "20 tasks").unwrap();
    let layout = HeatmapLayout::new(tasks);
    let image = decode_png(&path);
    assert_eq!((image.0, image.1), (layout.width, layout.height));
    let got = pixel(&image, swatch(&layout, tasks, tasks - 1));
    assert!(close(got, colormap(matrix.row(tasks)[tasks - 1])));
}
