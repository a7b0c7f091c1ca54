//! The grid map as SVG: the deployment's polygons projected to a plane.
//!
//! A street is a few kilometres across, so an equirectangular projection
//! with longitude scaled by the cosine of the middle latitude keeps shapes
//! and distances true to well under one percent; no map library needed.

use crate::router::grids::GridMap;
use geo::BoundingRect;

/// Width of the drawing in SVG units; the height follows the map's shape.
const WIDTH: f64 = 1000.0;
/// Margin around the map, SVG units.
const MARGIN: f64 = 8.0;

/// One grid, drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnGrid {
    /// Its code.
    pub code: String,
    /// 1 the street, 2 a community, 3 a sub-grid.
    pub depth: usize,
    /// Its name (Chinese first), or its code.
    pub name: String,
    /// Its English name, or its name.
    pub name_en: String,
    /// The SVG path.
    pub path: String,
    /// Where its label goes.
    pub label: (f64, f64),
}

/// The projected map.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    /// Width, SVG units.
    pub width: f64,
    /// Height, SVG units.
    pub height: f64,
    /// Every grid, coarsest first.
    pub grids: Vec<DrawnGrid>,
}

/// Projects `map`.
pub fn draw(map: &GridMap) -> Drawing {
    let bounds = map
        .grids()
        .filter_map(|g| g.shape.bounding_rect())
        .reduce(|a, b| {
            geo::Rect::new(
                geo::Coord {
                    x: a.min().x.min(b.min().x),
                    y: a.min().y.min(b.min().y),
                },
                geo::Coord {
                    x: a.max().x.max(b.max().x),
                    y: a.max().y.max(b.max().y),
                },
            )
        });
    let Some(b) = bounds else {
        return Drawing {
            width: WIDTH,
            height: WIDTH / 2.0,
            grids: Vec::new(),
        };
    };
    let k = ((b.min().y + b.max().y) / 2.0).to_radians().cos();
    let span_x = ((b.max().x - b.min().x) * k).max(1e-9);
    let scale = (WIDTH - 2.0 * MARGIN) / span_x;
    let height = (b.max().y - b.min().y) * scale + 2.0 * MARGIN;
    let project = |x: f64, y: f64| {
        (
            MARGIN + (x - b.min().x) * k * scale,
            MARGIN + (b.max().y - y) * scale,
        )
    };
    let grids = map
        .grids()
        .map(|g| {
            let mut path = String::new();
            for polygon in &g.shape.0 {
                for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                    for (i, c) in ring.0.iter().enumerate() {
                        let (x, y) = project(c.x, c.y);
                        path.push_str(&format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { "L" }));
                    }
                    path.push('Z');
                }
            }
            let label = g
                .shape
                .bounding_rect()
                .map(|r| project((r.min().x + r.max().x) / 2.0, (r.min().y + r.max().y) / 2.0))
                .unwrap_or((0.0, 0.0));
            let name = g.name.unwrap_or(g.code).to_string();
            DrawnGrid {
                code: g.code.to_string(),
                depth: g.depth,
                name_en: g
                    .name_en
                    .map(str::to_string)
                    .unwrap_or_else(|| name.clone()),
                name,
                path,
                label,
            }
        })
        .collect();
    Drawing {
        width: WIDTH,
        height,
        grids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yingfeng_map_projects_every_grid_inside_the_drawing() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/yingfeng/grids.geojson"
        );
        let map = GridMap::load(std::path::Path::new(path), None).unwrap();
        let d = draw(&map);
        assert_eq!(d.grids.len(), 57);
        assert_eq!(
            d.grids[0].code, "yingfeng",
            "the street first, under the rest"
        );
        assert_eq!(d.grids.iter().filter(|g| g.depth == 2).count(), 17);
        assert_eq!(d.grids.iter().filter(|g| g.depth == 3).count(), 39);
        let yingyi = d
            .grids
            .iter()
            .find(|g| g.code == "yingfeng/yingyi/2")
            .unwrap();
        assert_eq!(yingyi.name, "盈一村第二网格");
        // Every point inside the drawing; the street's box fills it.
        for g in &d.grids {
            for n in g.path.split(['M', 'L', 'Z', ',']).filter(|s| !s.is_empty()) {
                let v: f64 = n.parse().unwrap();
                assert!(
                    (0.0..=d.width.max(d.height)).contains(&v),
                    "{} in {}",
                    v,
                    g.code
                );
            }
        }
        // The street is ~4.8 km wide and ~4 km tall at 30.2°N.
        let ratio = d.width / d.height;
        assert!((1.1..1.3).contains(&ratio), "{ratio}");
    }
}
