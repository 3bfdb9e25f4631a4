# Inventory in Ruby.
require 'json'
require_relative 'lib/store'

module Shop
  class Item
    def initialize(name, price)
      @name = name
      @price = price
    end

    def to_s
      "#{@name}: #{@price}"
    end

    def self.parse(text)
      new(*JSON.parse(text))
    end
  end
end

def total(items)
  items.sum(&:price)
end
