// Geometry in C++.
#include <iostream>
#include <vector>
#include "geometry.hpp"

namespace geo {

struct Point {
    double x, y;
};

class Polygon {
public:
    Polygon() {}
    double area() const {
        return 0.0;
    }
    void add(Point p);
private:
    std::vector<Point> points_;
};

void Polygon::add(Point p) {
    points_.push_back(p);
}

}  // namespace geo

int main() {
    geo::Polygon poly;
    std::cout << poly.area() << std::endl;
    return 0;
}
