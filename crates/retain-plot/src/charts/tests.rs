//! Tests of the charts: series, bars, scatter labels, and rendering from several threads.

use super::*;

fn matrix() -> AccuracyMatrix {
    AccuracyMatrix::from_rows(&[
        vec![0.05, 0.10, 0.20],
        vec![0.95, 0.30, 0.10],
        vec![0.60, 0.85, 0.50],
        vec![0.50, 0.70, 0.90],
    ])
    .unwrap()
}

/// Width, height and how many pixels have each colour of `colours`.
fn png_colour_counts(path: &Path, colours: &[[u8; 3]]) -> (u32, u32, Vec<usize>, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let pixels: Vec<[u8; 3]> = buf.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    let counts = colours
        .iter()
        .map(|c| pixels.iter().filter(|p| *p == c).count())
        .collect();
    let distinct: std::collections::HashSet<[u8; 3]> = pixels.into_iter().collect();
    (info.width, info.height, counts, distinct.len())
}

fn hex([r, g, b]: [u8; 3]) -> String {
    format!("#{r:02X}{g:02X}{b:02X}")
}

fn text(content: &str) -> String {
    format!("\n{content}\n</text>")
}

#[test]
fn task_lines_draw_one_series_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("lines.png");
    task_accuracy_lines(&png, &matrix(), "naive (class_il)").unwrap();
    let colours: Vec<[u8; 3]> = (0..3).map(series_colour).collect();
    let (w, h, counts, distinct) = png_colour_counts(&png, &colours);
    assert_eq!((w, h), (720, 480));
    assert!(distinct > 20, "only {distinct} colours");
    for (i, count) in counts.iter().enumerate() {
        // A 2 px line over the chart and four markers: hundreds of pixels.
        assert!(*count > 200, "series {i} has {count} pixels");
    }

    let svg_path = dir.path().join("lines.svg");
    task_accuracy_lines(&svg_path, &matrix(), "naive (class_il)").unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    // One marker per point: 3 tasks × 4 rows.
    assert_eq!(svg.matches("<circle").count(), 12);
    for (i, c) in colours.iter().enumerate() {
        assert!(
            svg.contains(&format!("stroke=\"{}\"", hex(*c))),
            "series {i}"
        );
        assert!(
            svg.contains(&text(&format!("T{}", i + 1))),
            "legend T{}",
            i + 1
        );
    }
    assert!(svg.contains(&text("naive (class_il)")));
    assert!(svg.contains(&text("tasks trained (0 = untrained)")));
}

#[test]
fn bars_show_means_and_error_bars() {
    let bars = vec![
        Bar {
            label: "method=naive".into(),
            mean: 0.5,
            std: 0.1,
        },
        Bar {
            label: "method=joint".into(),
            mean: 0.9,
            std: 0.0,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("bars.png");
    comparison_bars(&png, &bars, "ACC").unwrap();
    let (w, h, counts, _) = png_colour_counts(&png, &[series_colour(0), series_colour(1)]);
    assert_eq!((w, h), (560, 520));
    // Bar heights are proportional to the means: 0.9 / 0.5 of the pixels, give or take
    // the error bar drawn over the first one.
    let ratio = counts[1] as f64 / counts[0] as f64;
    assert!((1.6..2.0).contains(&ratio), "{counts:?}");

    let svg_path = dir.path().join("bars.svg");
    comparison_bars(&svg_path, &bars, "ACC").unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    for (i, label) in ["method=naive", "method=joint"].iter().enumerate() {
        assert!(svg.contains(&text(label)), "{label}");
        assert!(svg.contains(&format!("fill=\"{}\"", hex(series_colour(i)))));
    }
    assert!(svg.contains(&text("50.0")) && svg.contains(&text("90.0")));
    // The error bar: a black vertical line from 40 % to 60 % of the first bar, plus caps.
    assert!(svg.contains("stroke=\"#000000\""), "no error bar");
}

#[test]
fn labels_of_points_close_together_are_stacked() {
    let point = |x: f64, y: f64| Point {
        label: String::new(),
        x,
        y,
    };
    let series = vec![
        Series {
            label: "task_il".into(),
            // LoRA and two QLoRAs: same parameters, accuracies within a point.
            points: vec![
                point(25_226.0, 0.981),
                point(25_226.0, 0.980),
                point(25_226.0, 0.981),
            ],
        },
        Series {
            label: "class_il".into(),
            // Far below, and far to the left: unaffected.
            points: vec![point(25_226.0, 0.2), point(1_162.0, 0.98)],
        },
    ];
    // The first keeps its place, the second goes a line down, the third a line up.
    assert_eq!(label_offsets(&series), vec![vec![0, 14, -14], vec![0, 0]]);
}

#[test]
fn scatter_places_one_labelled_point_per_configuration_on_a_log_axis() {
    let series = vec![
        Series {
            label: "class_il".into(),
            points: vec![
                Point {
                    label: "naive".into(),
                    x: 89_610.0,
                    y: 0.2,
                },
                Point {
                    label: "lora".into(),
                    x: 5_000.0,
                    y: 0.6,
                },
            ],
        },
        Series {
            label: "task_il".into(),
            points: vec![Point {
                label: "bitfit".into(),
                x: 310.0,
                y: 0.9,
            }],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("scatter.svg");
    accuracy_vs_parameters(&svg_path, &series, "ACC vs params").unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(svg.matches("<circle").count(), 3);
    for label in ["naive", "lora", "bitfit", "class_il", "task_il"] {
        assert!(svg.contains(&text(label)), "{label}");
    }
    assert!(svg.contains(&text("trainable parameters (log scale)")));
    // Decades are labelled on the logarithmic axis.
    assert!(
        svg.contains(&text("1k")) && svg.contains(&text("10k")),
        "{svg}"
    );

    let png = dir.path().join("scatter.png");
    accuracy_vs_parameters(&png, &series, "ACC vs params").unwrap();
    let (_, _, counts, _) = png_colour_counts(&png, &[series_colour(0), series_colour(1)]);
    // Filled circles of radius 6 (≈ 113 pixels each) and a 10×10 legend square per series.
    assert!(
        (2 * 80 + 100..2 * 200 + 130).contains(&counts[0]),
        "{counts:?}"
    );
    assert!((80 + 100..200 + 130).contains(&counts[1]), "{counts:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 2, "temporary files left behind");
    assert!(matches!(
        accuracy_vs_parameters(&dir.path().join("x.gif"), &series, "t"),
        Err(PlotError::UnsupportedFormat { .. })
    ));
}

#[test]
fn counts_are_short() {
    assert_eq!(format_count(500.0), "500");
    assert_eq!(format_count(12_000.0), "12k");
    assert_eq!(format_count(1_500_000.0), "1.5M");
}

/// Plots drawn on several threads at once come out byte for byte as drawn one by one: a
/// caller may render a grid's plots in parallel.
#[test]
fn plots_rendered_in_parallel_match_sequential_ones() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["png", "svg"]
        .iter()
        .flat_map(|ext| (0..3).map(move |i| format!("plot-{i}.{ext}")))
        .collect();
    let draw = |name: &str, subdir: &str| {
        let path = dir.path().join(subdir).join(name);
        if name.starts_with("plot-0") {
            crate::accuracy_heatmap(&path, &matrix(), name).unwrap();
        } else if name.starts_with("plot-1") {
            task_accuracy_lines(&path, &matrix(), name).unwrap();
        } else {
            let bars = [Bar {
                label: name.into(),
                mean: 0.5,
                std: 0.1,
            }];
            comparison_bars(&path, &bars, name).unwrap();
        }
    };
    for subdir in ["sequential", "parallel"] {
        std::fs::create_dir(dir.path().join(subdir)).unwrap();
    }
    for name in &names {
        draw(name, "sequential");
    }
    std::thread::scope(|s| {
        for name in &names {
            s.spawn(|| draw(name, "parallel"));
        }
    });
    for name in &names {
        let read = |subdir: &str| std::fs::read(dir.path().join(subdir).join(name)).unwrap();
        assert_eq!(read("parallel"), read("sequential"), "{name}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("parallel"))
            .unwrap()
            .count(),
        names.len(),
        "temporary files left behind"
    );
}
