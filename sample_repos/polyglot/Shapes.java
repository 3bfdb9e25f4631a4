// Shapes in Java.
package com.example.shapes;

import java.util.List;
import java.util.ArrayList;
import static java.lang.Math.PI;
import java.io.*;

public class Shapes {
    private final List<Shape> shapes = new ArrayList<>();

    public Shapes() {
    }

    public void add(Shape shape) {
        shapes.add(shape);
    }

    interface Shape {
        double area();
    }

    static class Circle implements Shape {
        private final double r;

        Circle(double r) {
            this.r = r;
        }

        public double area() {
            return PI * r * r;
        }
    }

    enum Color { RED, GREEN }
}
